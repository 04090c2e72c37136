"""L-BFGS: a quasi-Newton direction from the last ``m`` steps and gradient changes, and a line
search.

BFGS builds an approximation of the INVERSE Hessian from the secant pairs
``s_i = x_{i+1} - x_i``, ``y_i = g_{i+1} - g_i``; L-BFGS keeps only the last ``m`` pairs
(``memory_size``) and never forms a matrix: the two-loop recursion multiplies the gradient by the
approximation in ``O(m n)`` (Nocedal & Wright, Algorithm 7.4)::

    q = g
    for i = k-1, ..., k-m:          (newest to oldest)
      alpha_i = rho_i s_i.q          rho_i = 1 / (y_i.s_i)
      q = q - alpha_i y_i
    r = gamma q                     gamma = s_{k-1}.y_{k-1} / y_{k-1}.y_{k-1}   (H_0 = gamma I)
    for i = k-m, ..., k-1:          (oldest to newest)
      beta = rho_i y_i.r
      r = r + (alpha_i - beta) s_i
    d = -r                          (~ -H^-1 g)

then a line search picks ``eta`` along ``d`` (Wolfe conditions; optax's zoom line search by
default) and ``x += eta d``. A pair enters the memory only if ``y.s > eps y.y`` (positive curvature,
as scipy's L-BFGS-B), which keeps the approximation positive definite. Before any pair exists,
``H_0 = min(1, 1/|g|) I`` (optax's choice: the first trial step has length at most 1).

The new pair's gradient ``g_{k+1}`` is the one the line search evaluated at the accepted point, on
the same ``value_fn`` as ``g_k``: on full batches that is simply the next gradient; on mini-batches
both gradients of a pair come from the same batch (see ``research.optim.second_order`` for the
mini-batch warning).

Reference: Nocedal & Wright, "Numerical Optimization", 2nd ed., Algorithms 7.4 and 7.5; Liu &
Nocedal 1989, "On the limited memory BFGS method for large scale optimization".
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from research.optim import validation
from research.optim.second_order import EvaluationCount, bind_value_fn

Params = Any


class LBFGSState(NamedTuple):
  """Memory of the last ``m`` pairs as flat vectors, OLDEST FIRST: ``steps`` ``s_i`` (m, n),
  ``grad_changes`` ``y_i`` (m, n), ``rhos`` ``1 / (y_i.s_i)`` (m,) with 0 for an empty slot;
  ``count`` of updates; the line search's state (holds ``value`` and ``grad`` at the accepted
  point, which ``optax.value_and_grad_from_state`` reuses); ``evaluations`` so far."""
  steps: jax.Array
  grad_changes: jax.Array
  rhos: jax.Array
  count: jax.Array
  linesearch: Any
  evaluations: EvaluationCount


def two_loop_recursion(g: jax.Array, steps: jax.Array, grad_changes: jax.Array,
                       rhos: jax.Array, gamma: jax.Array) -> jax.Array:
  """``H_k g`` for the L-BFGS inverse-Hessian approximation of the pairs (oldest first; an
  empty slot has ``rho = 0`` and leaves the vector unchanged), ``H_0 = gamma I``."""

  def newest_to_oldest(q, pair):
    s, y, rho = pair
    alpha = rho * (s @ q)
    return q - alpha * y, alpha

  q, alphas = jax.lax.scan(newest_to_oldest, g, (steps, grad_changes, rhos), reverse=True)
  r = gamma * q

  def oldest_to_newest(r, pair):
    s, y, rho, alpha = pair
    beta = rho * (y @ r)
    return r + (alpha - beta) * s, None

  r, _ = jax.lax.scan(oldest_to_newest, r, (steps, grad_changes, rhos, alphas))
  return r


def initial_inverse_hessian_scale(g: jax.Array, steps: jax.Array, grad_changes: jax.Array,
                                  rhos: jax.Array) -> jax.Array:
  """``gamma = s.y / y.y`` of the newest pair; ``min(1, 1/|g|)`` while the memory is empty."""
  s, y = steps[-1], grad_changes[-1]
  have_pair = rhos[-1] > 0
  newest = (s @ y) / jnp.where(have_pair, y @ y, 1.0)
  return jnp.where(have_pair, newest, jnp.minimum(1.0, 1.0 / jnp.linalg.norm(g)))


def remember_pair(state: LBFGSState, s: jax.Array, y: jax.Array
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Appends ``(s, y, 1 / y.s)`` and forgets the oldest pair, unless ``y.s <= eps * y.y``
  (no positive curvature along ``s``: the pair is skipped, as in L-BFGS-B)."""
  ys = y @ s
  keep = ys > jnp.finfo(s.dtype).eps * (y @ y)

  def push(history, new):
    return jnp.where(keep, jnp.concatenate([history[1:], new[None]]), history)

  rho = jnp.where(keep, 1.0 / jnp.where(keep, ys, 1.0), 0.0).astype(state.rhos.dtype)
  return push(state.steps, s), push(state.grad_changes, y), push(state.rhos, rho)


def default_linesearch() -> optax.GradientTransformationExtraArgs:
  """optax's zoom line search (strong Wolfe, c1 = 1e-4, c2 = 0.9), first trial step 1, at most
  20 trials: the one ``optax.lbfgs`` uses."""
  return optax.scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")


def lbfgs(memory_size: int = 10, linesearch: optax.GradientTransformationExtraArgs | None = None
          ) -> optax.GradientTransformationExtraArgs:
  """L-BFGS with a line search: ``d = -H_k g`` by the two-loop recursion, ``x += eta d``.

  Args:
    memory_size: number ``m`` of (s, y) pairs kept (integer >= 1; 3-20 is usual).
    linesearch: an optax line search whose state stores ``value`` and ``grad`` at the accepted
      point (``optax.scale_by_zoom_linesearch``, or ``scale_by_backtracking_linesearch(...,
      store_grad=True)``); default ``default_linesearch()``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update(grads, state, params, *, value_fn,
    value=None, **extra_args)`` (see ``research.optim.second_order`` for the training step).
  """
  validation.check_integer_at_least("memory_size", memory_size, 1)
  linesearch = default_linesearch() if linesearch is None else linesearch

  def init_fn(params):
    x, _ = ravel_pytree(params)
    linesearch_state = linesearch.init(params)
    for name in ("value", "grad", "num_linesearch_steps"):
      if optax.tree.get(linesearch_state, name) is None:
        raise ValueError(
            f"lbfgs needs a line search whose state stores {name!r} (the accepted point's value "
            f"and gradient, and its number of trials): use optax.scale_by_zoom_linesearch or "
            f"optax.scale_by_backtracking_linesearch(..., store_grad=True)")
    history = jnp.zeros((memory_size, x.size), x.dtype)
    return LBFGSState(steps=history, grad_changes=history, rhos=jnp.zeros(memory_size, x.dtype),
                      count=jnp.zeros([], jnp.int32), linesearch=linesearch_state,
                      evaluations=EvaluationCount.zeros())

  def update_fn(grads, state, params=None, *, value_fn=None, value=None, **extra_args):
    if params is None:
      raise ValueError("lbfgs needs params: call tx.update(grads, state, params, value_fn=...)")
    extra_args.pop("grad", None)  # the gradient is `grads`
    loss = bind_value_fn(value_fn, extra_args, "lbfgs")
    evaluations = state.evaluations
    if value is None:
      value = loss(params)
      evaluations = evaluations.add(value_calls=1)
    g, unravel = ravel_pytree(grads)

    gamma = initial_inverse_hessian_scale(g, state.steps, state.grad_changes, state.rhos)
    direction = -two_loop_recursion(g, state.steps, state.grad_changes, state.rhos, gamma)

    updates, linesearch_state = linesearch.update(
        unravel(direction), state.linesearch, params, value=value, grad=grads, value_fn=loss)
    trials = optax.tree.get(linesearch_state, "num_linesearch_steps")
    evaluations = evaluations.add(value_and_grad_calls=trials)

    s, _ = ravel_pytree(updates)
    new_g, _ = ravel_pytree(optax.tree.get(linesearch_state, "grad"))
    steps, grad_changes, rhos = remember_pair(state, s.astype(g.dtype), new_g - g)
    return updates, LBFGSState(steps=steps, grad_changes=grad_changes, rhos=rhos,
                               count=optax.safe_increment(state.count),
                               linesearch=linesearch_state, evaluations=evaluations)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
