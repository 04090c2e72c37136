r"""The update step, written once: every path that changes parameters goes through ``apply_update``.

For any rule ``tx`` (first order, the Nesterov look-ahead form, or a second-order rule)::

    point        = gradient_point(params, opt_state)     # x + mu * v for nesterov_lookahead, else x
    (f, aux), g  = value_and_grad(loss)(point)
    delta, state = tx.update(g, opt_state, params, value=f, grad=g, value_fn=loss)
    params       = params + delta             # one fused pass with the CPU kernels

``value_fn`` is what the second-order rules need (Hessian-vector products, line-search trials,
the actual decrease of a damped step); first-order rules ignore it. The training step, the
members trainer, distillation, the sanity overfit check and the gradient check's burn-in all call
``apply_update``, so ``config.optimizer.name = "nesterov_lookahead"`` runs the same algorithm
everywhere.

``make_step(tx, loss_fn, full_batch=...)`` is the same update as a jittable step for a plain
scalar loss of ``(params, *batch)``; with ``full_batch=True`` it reuses the value and gradient a
second-order rule already computed at the new point (the line search's accepted point, the damped
trial point) instead of evaluating them again (see ``research.optim.second_order``).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from research import optim
from research.optim.second_order import stored_value_and_grad

Params = Any


class Update(NamedTuple):
  """One update: the new parameters and rule state, and what was computed on the way.

  ``loss`` and ``aux`` are the loss function's outputs at the gradient point (the parameters
  themselves except for the look-ahead form); ``grads`` the gradient there; ``updates`` the delta
  that was added (None unless asked for: ``need_updates``); ``evaluated`` False when
  ``make_step(full_batch=True)`` reused a stored value.
  """
  params: Params
  opt_state: Any
  loss: jax.Array
  aux: Any
  grads: Params
  updates: Params
  evaluated: jax.Array


def apply_update(tx: optax.GradientTransformation,
                 loss_fn: Callable[[Params], tuple[jax.Array, Any]], params: Params,
                 opt_state: Any, *, reuse_stored: bool = False,
                 need_updates: bool = False) -> Update:
  """One update of ``tx`` on ``loss_fn(params) -> (loss, aux)`` (module docstring).

  ``loss_fn`` closes over the batch and any randomness (dropout key), so that a second-order rule
  can evaluate it at other points; its ``aux`` (logits, new batch-norm statistics, sown
  activations) is returned as computed at the gradient point.

  ``reuse_stored`` (full batch only, ``aux`` must be None): take the value and gradient a
  second-order rule stored in its state at these parameters instead of evaluating them again.
  ``need_updates``: also return the delta (``Update.updates``; the monitored step's update/weight
  ratios need it); otherwise the update is applied in one pass and ``updates`` is None.
  """
  point = optim.gradient_point(params, opt_state)

  def evaluate():
    return jax.value_and_grad(loss_fn, has_aux=True)(point)

  stored = stored_value_and_grad(opt_state) if reuse_stored else None
  if stored is None:
    (loss, aux), grads = evaluate()
    evaluated = jnp.asarray(True)
  else:
    # The stored value is inf when there is nothing valid to reuse (first step, rejected step).
    evaluated = ~jnp.isfinite(stored[0])
    (loss, aux), grads = jax.lax.cond(evaluated, evaluate, lambda: ((stored[0], None), stored[1]))
  extra = {"value": loss, "grad": grads, "value_fn": lambda p: loss_fn(p)[0]}
  if need_updates:
    updates, opt_state = tx.update(grads, opt_state, params, **extra)
    new_params = optax.apply_updates(params, updates)
  else:
    # update + apply in one pass where the fused CPU kernels run (research.optim.fused): the
    # same bits as tx.update + optax.apply_updates, without the delta written and read back.
    new_params, opt_state = optim.update_and_apply(tx, grads, opt_state, params, **extra)
    updates = None
  return Update(new_params, opt_state, loss, aux, grads, updates, evaluated)


def make_step(tx: optax.GradientTransformation, loss_fn: Callable[..., jax.Array], *,
              full_batch: bool) -> Callable[..., tuple[Params, Any, jax.Array, jax.Array]]:
  """One training step for any rule (first- or second-order), ready for ``jax.jit``.

  Args:
    tx: the update rule.
    loss_fn: ``loss_fn(params, *batch) -> scalar``.
    full_batch: True when every call gets the same ``batch`` (the whole training set): the value
      and gradient a second-order rule stored at the new point are reused. False for mini-batches:
      always evaluated afresh on the current batch (the stored ones belong to the last batch).

  Returns:
    ``step(params, opt_state, *batch) -> (params, opt_state, value, evaluated)``: ``value`` is the
    loss at the INPUT params, ``evaluated`` is True when the step computed value and gradient
    itself (False when reused).
  """

  def step(params, opt_state, *batch):
    update = apply_update(tx, lambda p: (loss_fn(p, *batch), None), params, opt_state,
                          reuse_stored=full_batch)
    return update.params, update.opt_state, update.loss, update.evaluated

  return step
