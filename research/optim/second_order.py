r"""How a training step drives the second-order rules: ``newton``, ``hessian_free_newton``,
``lbfgs``.

The playbook's second family of update rules is Newton's ``x <- x - [H f(x)]^-1 grad f(x)``: no
learning rate, but the Hessian ``H`` of one million parameters has 1e12 entries (3725 GiB in
float32). ``research.optim.newton`` forms it (small models only), ``hessian_free_newton`` only
multiplies by it (Hessian-vector products + conjugate gradient), and ``lbfgs`` approximates its
inverse from the last ``m`` steps and gradient changes. All three are
``optax.GradientTransformationExtraArgs``: besides the gradient they need the loss as a FUNCTION
of the parameters, ``value_fn`` (to take Hessian-vector products, to try steps in a line search,
or to measure the actual decrease), and optionally its ``value`` at ``params``.

Full batch (the whole training set per step; where these methods work best)::

    def loss(params):                       # closes over the WHOLE training set
      return cross_entropy(apply(params, x_train), y_train) + l2 * penalty(params)

    tx = research.optim.lbfgs(memory_size=10)   # or newton(...) / hessian_free_newton(...)
    opt_state = tx.init(params)
    for _ in range(num_steps):
      value, grad = optax.value_and_grad_from_state(loss)(params, state=opt_state)
      updates, opt_state = tx.update(grad, opt_state, params, value=value, grad=grad,
                                     value_fn=loss)
      params = optax.apply_updates(params, updates)

``value_and_grad_from_state`` reuses the value and gradient the rule already computed at the new
point (the line search's accepted point, or the adaptive damping's trial point) instead of
evaluating them again; ``research.train.make_step(tx, loss_fn, full_batch=True)`` is that loop
body as one jittable function, and works for the first-order rules too (they store nothing, so it
evaluates).

Mini-batches: pass the CURRENT batch's loss as ``value_fn`` and always evaluate the gradient afresh
(``research.train.make_step(..., full_batch=False)``); the stored value and gradient belong to the
previous batch and must not be reused. The playbook's warning applies: L-BFGS is tricky with
mini-batches. Its curvature pairs ``y = g(x_new) - g(x)`` mix the change of the parameters with
the change of the batch, and the line search minimizes one batch's loss exactly, so the directions
become noisy and steps too long. ``lbfgs`` takes both gradients of a pair on the SAME batch (the
line search evaluates the new point on the current batch), which removes the first problem
(Schraudolph et al. 2007; Byrd et al. 2016) but not the second; use large batches, and prefer a
first-order rule with momentum for noisy mini-batch training. Newton and Hessian-free steps on a
mini-batch similarly fit that batch's quadratic model; use batches of thousands of examples
(Martens 2010).

Counting work: each rule's state holds an ``EvaluationCount`` of the evaluations the rule made
itself (line-search trials, Hessian-vector products, trial values); ``evaluation_count(opt_state)``
reads it. The caller's own gradient evaluations (one per step, or none when reused) are not in it.

Reference: CS231n "Neural Networks Part 3" (second-order methods); Nocedal & Wright, "Numerical
Optimization", 2nd ed., chapters 6-7.
"""
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from research.optim.hyperparams import find_state

Params = Any


class EvaluationCount(NamedTuple):
  """Evaluations a second-order rule made inside ``update``, cumulative since ``init``.

  ``value_and_grad_calls``: loss + gradient (line-search trials, trial points);
  ``value_calls``: loss only; ``hvp_calls``: Hessian-vector products (a dense Hessian of ``n``
  parameters counts as ``n``: ``jax.hessian`` is ``n`` forward-over-reverse products).
  """
  value_and_grad_calls: jax.Array
  value_calls: jax.Array
  hvp_calls: jax.Array

  @classmethod
  def zeros(cls) -> "EvaluationCount":
    zero = jnp.zeros([], jnp.int32)
    return cls(zero, zero, zero)

  def add(self, value_and_grad_calls: Any = 0, value_calls: Any = 0,
          hvp_calls: Any = 0) -> "EvaluationCount":
    return EvaluationCount(
        (self.value_and_grad_calls + value_and_grad_calls).astype(jnp.int32),
        (self.value_calls + value_calls).astype(jnp.int32),
        (self.hvp_calls + hvp_calls).astype(jnp.int32))


def evaluation_count(opt_state: Any) -> EvaluationCount | None:
  """The ``EvaluationCount`` inside ``opt_state`` (None for rules that keep none)."""
  return find_state(opt_state, EvaluationCount)


def bind_value_fn(value_fn: Callable[..., jax.Array] | None, extra_args: dict[str, Any],
                  rule: str) -> Callable[[Params], jax.Array]:
  """``params -> value_fn(params, **kwargs)``, with the ``update`` keyword arguments that
  ``value_fn`` accepts (as optax's line searches do: ``tx.update(..., value_fn=f, x=x, y=y)``
  calls ``f(params, x=x, y=y)``). Raises ``TypeError`` when ``value_fn`` is missing."""
  if value_fn is None:
    raise TypeError(
        f"{rule}.update needs value_fn=<the loss as a function of the parameters>: call "
        f"tx.update(grads, state, params, value=loss, value_fn=loss_fn) (see "
        f"research.optim.second_order)")
  parameters = inspect.signature(value_fn).parameters
  takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
  kwargs = {name: arg for name, arg in extra_args.items() if takes_any or name in parameters}
  return lambda params: value_fn(params, **kwargs)


def stored_value_and_grad(opt_state: Any) -> tuple[jax.Array, Params] | None:
  """The ``value`` and ``grad`` a rule left in its state for the next step (None if it keeps
  none; the value is ``inf`` when there is nothing valid to reuse)."""
  value = optax.tree.get(opt_state, "value")
  grad = optax.tree.get(opt_state, "grad")
  if value is None or grad is None:
    return None
  return value, grad
