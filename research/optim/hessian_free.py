"""Hessian-free (truncated) Newton: conjugate gradient on ``(H + damping * I) p = -g``.

H is never formed: CG only needs products ``H v``, and a Hessian-vector product is the
directional derivative of the gradient, ``H v = d/dt grad f(x + t v) |_{t=0}``, i.e. ``jax.jvp`` of
``jax.grad`` (forward-over-reverse, about the cost of two gradients; Pearlmutter 1994). Memory is
a few parameter-sized vectors, so it scales to real networks.

Conjugate gradient on ``A p = -g`` with ``A = H + damping * I`` (Nocedal & Wright, Algorithm 7.1)::

    p = 0;  r = g;  d = -r                      (r = A p + g is the residual)
    repeat up to cg_max_iters times:
      if d.A.d <= 0: stop (negative curvature; at the first iteration take p = d = -g)
      alpha = r.r / d.A.d
      p = p + alpha d;  r_new = r + alpha A d
      if |r_new| <= cg_tol * |g|: stop
      d = -r_new + (r_new.r_new / r.r) d;  r = r_new
    x += p

With ``cg_tol -> 0`` and ``cg_max_iters >= n`` this is the exact damped Newton step. The damping
is adapted with the Levenberg-Marquardt rule (``research.optim.damping``), as in Martens 2010.

Reference: Martens 2010, "Deep learning via Hessian-free optimization"; Nocedal & Wright,
"Numerical Optimization", 2nd ed., section 7.1 (Newton-CG); Pearlmutter 1994, "Fast exact
multiplication by the Hessian".
"""
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from research.optim import damping as lm
from research.optim import validation
from research.optim.second_order import EvaluationCount, bind_value_fn

Params = Any


class HessianFreeState(NamedTuple):
  """Current ``damping``; ``value`` and ``grad`` of the loss at the parameters after the last
  update (``inf`` when not evaluated); CG iterations of the last update (``cg_iterations``);
  the ``evaluations`` made so far."""
  damping: jax.Array
  value: jax.Array
  grad: Params
  cg_iterations: jax.Array
  evaluations: EvaluationCount


def hessian_vector_product(loss: Callable[[Params], jax.Array], params: Params,
                           vector: Params) -> Params:
  """``H v``: the derivative of ``grad loss`` at ``params`` in the direction ``vector``
  (forward-over-reverse), without forming ``H``."""
  return jax.jvp(jax.grad(loss), (params,), (vector,))[1]


class ConjugateGradientResult(NamedTuple):
  """Solution ``p``, ``A p`` (for the quadratic model), and the iterations taken."""
  solution: Params
  matvec_solution: Params
  iterations: jax.Array


def conjugate_gradient(matvec: Callable[[Params], Params], grad: Params, max_iters: int,
                       tol: float) -> ConjugateGradientResult:
  """Truncated CG for ``A p = -grad`` (Nocedal & Wright, Algorithm 7.1), stopping at
  ``|A p + grad| <= tol * |grad|``, after ``max_iters`` products, or at the first direction of
  non-positive curvature (then ``p = -grad`` if that happens at the first iteration)."""
  dot = optax.tree.vdot
  threshold = tol * optax.tree.norm(grad)

  class Carry(NamedTuple):
    p: Params
    ap: Params     # A p, kept to evaluate the quadratic model without another product
    r: Params      # residual A p + grad
    d: Params      # search direction
    iteration: jax.Array
    done: jax.Array

  def body(c: Carry) -> Carry:
    ad = matvec(c.d)
    curvature = dot(c.d, ad)
    negative = curvature <= 0
    rr = dot(c.r, c.r)
    alpha = rr / jnp.where(negative, 1.0, curvature)
    p = optax.tree.add_scale(c.p, alpha, c.d)
    ap = optax.tree.add_scale(c.ap, alpha, ad)
    r = optax.tree.add_scale(c.r, alpha, ad)
    converged = optax.tree.norm(r) <= threshold
    d = optax.tree.add_scale(optax.tree.scale(-1.0, r), dot(r, r) / rr, c.d)
    # Negative curvature: keep the previous p, except at the first iteration, where p = d = -g.
    first = c.iteration == 0
    p = jax.tree.map(lambda new, old, dd: jnp.where(negative, jnp.where(first, dd, old), new),
                     p, c.p, c.d)
    ap = jax.tree.map(lambda new, old, add: jnp.where(negative, jnp.where(first, add, old), new),
                      ap, c.ap, ad)
    return Carry(p, ap, r, d, c.iteration + 1, negative | converged)

  zeros = optax.tree.zeros_like(grad)
  start = Carry(p=zeros, ap=zeros, r=grad, d=optax.tree.scale(-1.0, grad),
                iteration=jnp.zeros([], jnp.int32), done=optax.tree.norm(grad) <= threshold)
  final = jax.lax.while_loop(lambda c: (~c.done) & (c.iteration < max_iters), body, start)
  return ConjugateGradientResult(final.p, final.ap, final.iteration)


def hessian_free_newton(damping: float = 1.0, cg_max_iters: int = 50, cg_tol: float = 1e-3,
                        adaptive_damping: bool = True) -> optax.GradientTransformationExtraArgs:
  """Truncated Newton step ``x += p``, ``p ~= -(H + damping * I)^-1 g`` by conjugate gradient
  with Hessian-vector products (module docstring).

  Args:
    damping: Levenberg-Marquardt damping (``>= 0``; the initial value when adaptive).
    cg_max_iters: at most this many CG iterations (= Hessian-vector products) per update.
    cg_tol: CG stops when the residual ``|(H + damping I) p + g|`` is below ``cg_tol * |g|``.
    adaptive_damping: adapt the damping from the reduction ratio and take the step only if the
      loss decreased (one extra loss+gradient evaluation per step, stored for the next step);
      needs ``damping > 0``. False: always take the CG step.

  Returns:
    An ``optax.GradientTransformationExtraArgs``; ``update(grads, state, params, *, value_fn,
    value=None, **extra_args)`` (see ``research.optim.second_order`` for the training step).
  """
  lm.check_damping(damping, adaptive_damping)
  validation.check_integer_at_least("cg_max_iters", cg_max_iters, 1)
  validation.check_positive("cg_tol", cg_tol)

  def init_fn(params):
    dtype = jnp.result_type(*jax.tree.leaves(params))
    return HessianFreeState(damping=jnp.asarray(damping, dtype),
                            value=jnp.asarray(jnp.inf, dtype),
                            grad=optax.tree.zeros_like(params),
                            cg_iterations=jnp.zeros([], jnp.int32),
                            evaluations=EvaluationCount.zeros())

  def update_fn(grads, state, params=None, *, value_fn=None, value=None, **extra_args):
    if params is None:
      raise ValueError(
          "hessian_free_newton needs params: call tx.update(grads, state, params, value_fn=...)")
    extra_args.pop("grad", None)  # the gradient is `grads`
    loss = bind_value_fn(value_fn, extra_args, "hessian_free_newton")
    lam = state.damping

    def damped_hvp(v):
      return optax.tree.add_scale(hessian_vector_product(loss, params, v), lam, v)

    cg = conjugate_gradient(damped_hvp, grads, cg_max_iters, cg_tol)
    step = optax.tree.cast_like(cg.solution, params)
    evaluations = state.evaluations.add(hvp_calls=cg.iterations)

    if not adaptive_damping:
      new_state = HessianFreeState(lam, jnp.full_like(state.value, jnp.inf), state.grad,
                                   cg.iterations, evaluations)
      return step, new_state

    if value is None:
      value = loss(params)
      evaluations = evaluations.add(value_calls=1)
    new_value, new_grad = jax.value_and_grad(loss)(optax.apply_updates(params, step))
    evaluations = evaluations.add(value_and_grad_calls=1)

    # p.H.p = p.(A p) - damping * p.p: the undamped model, from the A p that CG kept.
    step_hessian_step = (optax.tree.vdot(cg.solution, cg.matvec_solution)
                         - lam * optax.tree.vdot(cg.solution, cg.solution))
    rho = lm.reduction_ratio(
        new_value - value,
        lm.predicted_change(optax.tree.vdot(grads, cg.solution), step_hessian_step))
    accepted = lm.accept_step(value, new_value)
    new_state = HessianFreeState(
        damping=lm.adapt_damping(lam, rho),
        value=jnp.where(accepted, new_value, value).astype(state.value.dtype),
        grad=jax.tree.map(lambda new, old: jnp.where(accepted, new, old), new_grad, grads),
        cg_iterations=cg.iterations,
        evaluations=evaluations)
    step = jax.tree.map(lambda s: jnp.where(accepted, s, jnp.zeros_like(s)), step)
    return step, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
