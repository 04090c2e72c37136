"""Dense Newton's method with Levenberg-Marquardt damping, for SMALL models.

    H = hessian of f at x          (over all parameters, flattened into one vector of n)
    p = -(H + damping * I)^-1 g
    x += p

There is no learning rate: on a convex quadratic with ``damping = 0`` one step lands on the
minimum. With ``adaptive_damping`` the damping follows the Levenberg-Marquardt rule of
``research.optim.damping`` (the step is taken only if the loss decreased; the damping grows after
poor steps and shrinks after good ones), which makes the method usable on non-convex losses.

The Hessian has ``n**2`` entries: one million parameters need 1e12 of them, 3725 GiB in float32.
``init`` refuses models whose dense Hessian would exceed ``max_hessian_bytes`` and says how much
it would take; use ``hessian_free_newton`` or ``lbfgs``, which never form it.

Reference: Nocedal & Wright, "Numerical Optimization", 2nd ed., section 3.3 (Newton's method) and
10.3 (Levenberg-Marquardt); CS231n "Neural Networks Part 3" (second-order methods).
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from research.optim import damping as lm
from research.optim import validation
from research.optim.second_order import EvaluationCount, bind_value_fn

Params = Any

#: Default limit on the dense Hessian: 1 GiB (16384 float32 parameters, 11585 float64).
DEFAULT_MAX_HESSIAN_BYTES = 2**30


class NewtonState(NamedTuple):
  """Current ``damping``; ``value`` and ``grad`` of the loss at the parameters after the last
  update (``inf`` when not evaluated: reuse with ``optax.value_and_grad_from_state``); the
  ``evaluations`` made so far."""
  damping: jax.Array
  value: jax.Array
  grad: Params
  evaluations: EvaluationCount


def dense_hessian_bytes(params: Params) -> int:
  """Bytes of the dense Hessian of a loss over ``params``: ``n**2 * itemsize`` (``n`` = number
  of parameters, itemsize of their common dtype)."""
  leaves = jax.tree.leaves(params)
  n = sum(int(np.prod(np.shape(leaf))) for leaf in leaves)
  dtype = jnp.result_type(*leaves) if leaves else jnp.float32
  return n * n * jnp.dtype(dtype).itemsize


def _gib(num_bytes: float) -> str:
  return f"{num_bytes / 2**30:,.1f} GiB"


def check_dense_hessian_fits(params: Params, max_hessian_bytes: int) -> None:
  """Raises ``ValueError`` when the dense Hessian of ``params`` exceeds ``max_hessian_bytes``,
  giving the number of parameters and the memory it would take (1e6 float32 parameters:
  1e12 entries x 4 bytes = 3725.3 GiB)."""
  needed = dense_hessian_bytes(params)
  if needed > max_hessian_bytes:
    leaves = jax.tree.leaves(params)
    n = sum(int(np.prod(np.shape(leaf))) for leaf in leaves)
    dtype = jnp.dtype(jnp.result_type(*leaves))
    raise ValueError(
        f"newton: the dense Hessian of {n:,} parameters has {float(n) * n:.3g} entries x "
        f"{dtype.itemsize} bytes ({dtype.name}) = {_gib(needed)}, over max_hessian_bytes = "
        f"{_gib(max_hessian_bytes)}; use hessian_free_newton or lbfgs, which never form it")


def newton(damping: float = 1.0, adaptive_damping: bool = True,
           max_hessian_bytes: int = DEFAULT_MAX_HESSIAN_BYTES
           ) -> optax.GradientTransformationExtraArgs:
  """Damped Newton step ``x += -(H + damping * I)^-1 g`` with the dense Hessian ``H``.

  Args:
    damping: Levenberg-Marquardt damping (``>= 0``; the initial value when adaptive).
    adaptive_damping: adapt the damping from the reduction ratio and take the step only if the
      loss decreased (one extra loss evaluation per step, at the trial point, with its gradient
      stored for the next step); needs ``damping > 0``. False: always take the damped step.
    max_hessian_bytes: ``init`` raises ``ValueError`` when the dense Hessian is larger.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update(grads, state, params, *, value_fn,
    value=None, **extra_args)``, with ``value_fn(params, **matching extra_args)`` the loss (see
    ``research.optim.second_order`` for the training step).
  """
  lm.check_damping(damping, adaptive_damping)
  validation.check_integer_at_least("max_hessian_bytes", max_hessian_bytes, 1)

  def init_fn(params):
    check_dense_hessian_fits(params, max_hessian_bytes)
    flat, _ = ravel_pytree(params)
    return NewtonState(damping=jnp.asarray(damping, flat.dtype),
                       value=jnp.asarray(jnp.inf, flat.dtype),
                       grad=optax.tree.zeros_like(params),
                       evaluations=EvaluationCount.zeros())

  def update_fn(grads, state, params=None, *, value_fn=None, value=None, **extra_args):
    if params is None:
      raise ValueError("newton needs params: call tx.update(grads, state, params, value_fn=...)")
    extra_args.pop("grad", None)  # the gradient is `grads`
    loss = bind_value_fn(value_fn, extra_args, "newton")
    x, unravel = ravel_pytree(params)
    g, _ = ravel_pytree(grads)

    hessian = jax.hessian(lambda flat: loss(unravel(flat)))(x)
    lam = state.damping
    step = jnp.linalg.solve(hessian + lam * jnp.eye(x.size, dtype=x.dtype), -g)
    evaluations = state.evaluations.add(hvp_calls=x.size)

    if not adaptive_damping:
      new_state = NewtonState(lam, jnp.full_like(state.value, jnp.inf), state.grad, evaluations)
      return unravel(step), new_state

    if value is None:
      value = loss(params)
      evaluations = evaluations.add(value_calls=1)
    new_value, new_grad = jax.value_and_grad(loss)(unravel(x + step))
    evaluations = evaluations.add(value_and_grad_calls=1)

    rho = lm.reduction_ratio(new_value - value,
                             lm.predicted_change(g @ step, step @ hessian @ step))
    accepted = lm.accept_step(value, new_value)
    step = jnp.where(accepted, step, jnp.zeros_like(step))
    new_state = NewtonState(
        damping=lm.adapt_damping(lam, rho),
        value=jnp.where(accepted, new_value, value).astype(state.value.dtype),
        grad=jax.tree.map(lambda new, old: jnp.where(accepted, new, old), new_grad, grads),
        evaluations=evaluations)
    return unravel(step), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
