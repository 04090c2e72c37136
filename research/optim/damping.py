"""Levenberg-Marquardt damping for Newton steps: solve ``(H + damping * I) p = -g``.

A Newton step trusts the quadratic model ``m(p) = g.p + 0.5 p.H.p`` of the loss around ``x``.
Adding ``damping * I`` to ``H`` shortens the step towards ``-g / damping`` (gradient descent) when
the model is not to be trusted, and keeps the linear system solvable when ``H`` is singular or
indefinite. Adaptive damping compares the loss change the step actually gave with the change the
model predicted (the reduction ratio)::

    rho = (f(x + p) - f(x)) / m(p)
    damping *= 3/2   if rho < 1/4   (the model over-promised: shorter, more gradient-like steps)
    damping *= 2/3   if rho > 3/4   (the model is good: closer to the pure Newton step)

and the step is taken only when the loss decreased (otherwise the parameters stay and the next
update retries with the larger damping).

Reference: Martens 2010, "Deep learning via Hessian-free optimization", section 4.1 (the 3/2 and
2/3 factors); Nocedal & Wright, "Numerical Optimization", 2nd ed., section 4.1 (trust regions) and
10.3 (Levenberg-Marquardt).
"""
import jax
import jax.numpy as jnp

from research.optim import validation

#: ``rho`` below this: increase the damping; above ``GOOD_RATIO``: decrease it.
POOR_RATIO = 0.25
GOOD_RATIO = 0.75
INCREASE = 1.5
DECREASE = 2.0 / 3.0


def check_damping(damping: float, adaptive_damping: bool) -> None:
  """``damping >= 0``; ``adaptive_damping`` a bool, and with it ``damping > 0`` (the rule
  multiplies the damping by 3/2 or 2/3, so a zero damping would stay zero forever)."""
  validation.check_non_negative("damping", damping)
  if not isinstance(adaptive_damping, bool):
    raise ValueError(f"adaptive_damping must be True or False, got {adaptive_damping!r}")
  if adaptive_damping and not damping > 0:
    raise ValueError(f"adaptive_damping needs damping > 0 (it multiplies the damping by 3/2 or "
                     f"2/3), got damping={damping!r}")


def predicted_change(grad_dot_step: jax.Array, step_hessian_step: jax.Array) -> jax.Array:
  """The quadratic model's change of the loss for a step ``p``: ``m(p) = g.p + 0.5 p.H.p``
  (undamped ``H``: the model of the loss, not of the damped system)."""
  return grad_dot_step + 0.5 * step_hessian_step


def reduction_ratio(actual_change: jax.Array, model_change: jax.Array) -> jax.Array:
  """``rho = actual / predicted`` change of the loss; ``-inf`` when the model predicts no decrease
  (``m(p) >= 0``, e.g. along negative curvature) or the new loss is not finite, so that the
  damping grows."""
  usable = (model_change < 0) & jnp.isfinite(actual_change)
  return jnp.where(usable, actual_change / jnp.where(usable, model_change, -1.0), -jnp.inf)


def adapt_damping(damping: jax.Array, rho: jax.Array) -> jax.Array:
  """Levenberg-Marquardt rule: ``damping * 3/2`` if ``rho < 1/4``, ``* 2/3`` if ``rho > 3/4``."""
  factor = jnp.where(rho < POOR_RATIO, INCREASE, jnp.where(rho > GOOD_RATIO, DECREASE, 1.0))
  return (damping * factor).astype(damping.dtype)


def accept_step(value: jax.Array, new_value: jax.Array) -> jax.Array:
  """A damped step is kept only if it lowered the loss (NaN or Inf never count as lower)."""
  return jnp.isfinite(new_value) & (new_value < value)
