"""First-order update rules as ``optax.GradientTransformation``s.

Every rule's ``update(grads, state, params=None)`` returns the delta ``dx`` to ADD to the
parameters with ``optax.apply_updates(params, dx)``; the formulas below use ``x`` for parameters and
``g`` for the gradient. Each public factory validates its hyperparameters (``ValueError`` naming the
parameter, value and allowed range) and wraps the plain rule with ``optax.inject_hyperparams``
(see ``research.optim.hyperparams``): numeric hyperparameters live in the state, any of them may be
a schedule (a function of the update count, 0 at the first update), and the learning rate used is
``learning_rate * lr_scale`` (``lr_scale`` = 1 until ``scale_learning_rate`` changes it).

The plain rules (``*_rule``) take scalar hyperparameters (floats or traced arrays) and read like
their formulas; ``get_optimizer`` composes them. Rule states have the dtype of the parameters;
arithmetic runs in the (at least float32) hyperparameter precision and is cast back, so float32,
bfloat16 and float64 parameters keep their dtype.

Each rule states its formula for ONE leaf and hands it, with the scalars it uses, to
``research.optim.fused.update``. ``tx.update`` runs the formula; ``research.optim.fused.
update_and_apply(tx, grads, opt_state, params)`` (the rules are ``GradientTransformationExtraArgs``
to receive its request) lets a fused C++ kernel write ``params + delta`` and the new state in one
pass on CPU, the same bits for float32 and float64 leaves (``fused.status()`` says if it runs).

Reference: CS231n "Neural Networks Part 3" (parameter updates); Kingma & Ba 2015 (Adam);
Duchi et al. 2011 (Adagrad); Tieleman & Hinton 2012 (RMSprop); Sutskever et al. 2013 (Nesterov).
"""
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from research.optim import fused, validation
from research.optim.hyperparams import find_state, inject, keyword_factory

ScalarOrSchedule = float | jax.Array | Callable[[jax.Array], jax.Array]
Params = Any


def _zeros_like(params: Params) -> Params:
  return jax.tree.map(jnp.zeros_like, params)


def _cast_like(value: jax.Array, like: jax.Array) -> jax.Array:
  return value.astype(like.dtype)


# ----------------------------------------------------------------------------- plain rules


def _rule(init_fn: Callable, update_fn: Callable) -> optax.GradientTransformationExtraArgs:
  """A plain rule whose ``update`` accepts ``research.optim.update_and_apply``'s request to write
  ``params + delta`` in one fused pass (the same bits as ``update`` + ``optax.apply_updates``)."""
  update_fn.fused_apply = True
  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sgd_rule(learning_rate: jax.Array) -> optax.GradientTransformation:
  """Vanilla SGD: ``x += -learning_rate * g``."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def formula(g):
    return (_cast_like(-learning_rate * g, g),)

  def update_fn(grads, state, params=None, **extra_args):
    deltas, _ = fused.update("sgd", formula, (-learning_rate,), grads, (), params,
                             extra_args.get(fused.APPLY_ARG, False))
    return deltas, state

  return _rule(init_fn, update_fn)


class VelocityState(NamedTuple):
  """Velocity ``v`` of momentum and Nesterov rules (zeros at init)."""
  velocity: Params


def momentum_rule(learning_rate: jax.Array, mu: jax.Array) -> optax.GradientTransformation:
  """Momentum, velocity form: ``v = mu * v - learning_rate * g; x += v``.

  The learning rate is inside the velocity: a change of learning rate affects only the new
  gradients, the velocity keeps the steps already taken. ``optax.sgd(lr, momentum=mu)`` (=
  ``optax.trace`` then scaling) keeps ``m = g + mu * m`` and steps ``-lr_t * m``, which rescales the
  whole remembered velocity by the current learning rate; the two coincide only for a constant
  learning rate (then ``v = -lr * m``).
  """

  def init_fn(params):
    return VelocityState(velocity=_zeros_like(params))

  def update_fn(grads, state, params=None, **extra_args):
    deltas, (velocity,) = _velocity_update(learning_rate, mu, grads, state.velocity, params,
                                           extra_args)
    return deltas, VelocityState(velocity=velocity)

  return _rule(init_fn, update_fn)


def _velocity_update(learning_rate, mu, grads, velocity, params, extra_args):
  """``v = mu * v - learning_rate * g``; the delta is ``v`` (momentum, Nesterov look-ahead)."""

  def formula(g, v):
    v = _cast_like(mu * v - learning_rate * g, v)
    return v, v

  return fused.update("momentum", formula, (mu, learning_rate), grads, (velocity,), params,
                      extra_args.get(fused.APPLY_ARG, False))


def nesterov_rule(learning_rate: jax.Array, mu: jax.Array) -> optax.GradientTransformation:
  """Nesterov momentum, rewritten form (the stored parameters are the look-ahead point).

  ``v_prev = v; v = mu * v - learning_rate * g; x += -mu * v_prev + (1 + mu) * v``, with ``g``
  evaluated at the stored ``x`` (which equals the look-ahead form's ``x + mu * v``).
  """

  def init_fn(params):
    return VelocityState(velocity=_zeros_like(params))

  def formula(g, v):
    v = _cast_like(mu * v - learning_rate * g, v)
    # dx = -mu * v_prev + (1 + mu) * v; substituting mu * v_prev = v + learning_rate * g gives
    # dx = mu * v - learning_rate * g, the same value without reading v_prev after v is written
    # (with a donated state both share one buffer, and XLA would first copy v_prev: 3x slower).
    return _cast_like(mu * v - learning_rate * g, v), v

  def update_fn(grads, state, params=None, **extra_args):
    deltas, (velocity,) = fused.update("nesterov", formula, (mu, learning_rate), grads,
                                       (state.velocity,), params,
                                       extra_args.get(fused.APPLY_ARG, False))
    return deltas, VelocityState(velocity=velocity)

  return _rule(init_fn, update_fn)


class LookaheadState(NamedTuple):
  """Nesterov look-ahead form: velocity ``v`` and the ``mu`` of the NEXT update (the look-ahead
  point is ``x + mu * v``)."""
  velocity: Params
  mu: jax.Array


def nesterov_lookahead_rule(learning_rate: jax.Array, mu: jax.Array,
                            next_mu: jax.Array | None = None) -> optax.GradientTransformation:
  """Nesterov momentum, look-ahead form: the gradient must be taken at ``x + mu * v``.

  ``x_ahead = x + mu * v; g = grad(x_ahead); v = mu * v - learning_rate * g; x += v``.
  The train step asks where to evaluate the gradient with ``research.optim.gradient_point``, which
  reads ``v`` and the next update's ``mu`` from the state (``next_mu``: the momentum of the update
  after this one when ``mu`` follows a schedule; None means constant ``mu``).
  """

  def init_fn(params):
    return LookaheadState(velocity=_zeros_like(params), mu=jnp.asarray(mu))

  def update_fn(grads, state, params=None, **extra_args):
    deltas, (velocity,) = _velocity_update(learning_rate, mu, grads, state.velocity, params,
                                           extra_args)
    upcoming_mu = mu if next_mu is None else next_mu
    return deltas, LookaheadState(velocity=velocity, mu=jnp.asarray(upcoming_mu, state.mu.dtype))

  return _rule(init_fn, update_fn)


def next_count_schedule(schedule: Any) -> Any:
  """``t -> schedule(t + 1)`` for a schedule, None for a constant: the look-ahead form needs the
  momentum of the update after the current one."""
  return (lambda count: schedule(count + 1)) if callable(schedule) else None


class CacheState(NamedTuple):
  """Per-coordinate accumulated squared gradients (Adagrad) or their running mean (RMSprop)."""
  cache: Params


def adagrad_rule(learning_rate: jax.Array, eps: jax.Array) -> optax.GradientTransformation:
  """Adagrad: ``cache += g**2; x += -learning_rate * g / (sqrt(cache) + eps)``.

  Differs from ``optax.adagrad``, which starts the cache at 0.1 and puts ``eps`` inside the square
  root: ``-lr * g / sqrt(cache + eps)``.
  """

  def init_fn(params):
    return CacheState(cache=_zeros_like(params))

  def formula(g, c):
    c = _cast_like(c + g * g, c)
    return _cast_like(-learning_rate * g / (jnp.sqrt(c) + eps), g), c

  def update_fn(grads, state, params=None, **extra_args):
    deltas, (cache,) = fused.update("adagrad", formula, (-learning_rate, eps), grads,
                                    (state.cache,), params, extra_args.get(fused.APPLY_ARG, False))
    return deltas, CacheState(cache=cache)

  return _rule(init_fn, update_fn)


def rmsprop_rule(learning_rate: jax.Array, decay_rate: jax.Array,
                 eps: jax.Array) -> optax.GradientTransformation:
  """RMSprop: ``cache = decay_rate * cache + (1 - decay_rate) * g**2;
  x += -learning_rate * g / (sqrt(cache) + eps)``."""

  def init_fn(params):
    return CacheState(cache=_zeros_like(params))

  def formula(g, c):
    c = _cast_like(decay_rate * c + (1 - decay_rate) * g * g, c)
    return _cast_like(-learning_rate * g / (jnp.sqrt(c) + eps), g), c

  def update_fn(grads, state, params=None, **extra_args):
    deltas, (cache,) = fused.update(
        "rmsprop", formula, (decay_rate, 1 - decay_rate, -learning_rate, eps), grads,
        (state.cache,), params, extra_args.get(fused.APPLY_ARG, False))
    return deltas, CacheState(cache=cache)

  return _rule(init_fn, update_fn)


class AdamState(NamedTuple):
  """Adam: number of updates so far ``count``, first moment ``m``, second moment ``v``."""
  count: jax.Array
  m: Params
  v: Params


def adam_rule(learning_rate: jax.Array, beta1: jax.Array, beta2: jax.Array, eps: jax.Array,
              bias_correction: bool = True) -> optax.GradientTransformation:
  """Adam (Kingma & Ba 2015), ``t`` counting updates from 1::

      m = beta1 * m + (1 - beta1) * g
      v = beta2 * v + (1 - beta2) * g**2
      m_hat = m / (1 - beta1**t);  v_hat = v / (1 - beta2**t)      (bias_correction=True)
      x += -learning_rate * m_hat / (sqrt(v_hat) + eps)

  With ``bias_correction=False``, the simplified update
  ``x += -learning_rate * m / (sqrt(v) + eps)``.
  """

  def init_fn(params):
    return AdamState(count=jnp.zeros([], jnp.int32), m=_zeros_like(params), v=_zeros_like(params))

  def update_fn(grads, state, params=None, **extra_args):
    t = optax.safe_increment(state.count)
    if bias_correction:
      # Folding both corrections into scalars leaves the per-coordinate work one formula:
      # lr * m_hat / (sqrt(v_hat) + eps) == step_size * m / (sqrt(v) + eps_hat).
      correction1 = 1 - beta1 ** t
      sqrt_correction2 = jnp.sqrt(1 - beta2 ** t)
      step_size = learning_rate * sqrt_correction2 / correction1
      eps_hat = eps * sqrt_correction2
    else:
      step_size, eps_hat = learning_rate, eps

    def formula(g, m, v):
      m = _cast_like(beta1 * m + (1 - beta1) * g, m)
      v = _cast_like(beta2 * v + (1 - beta2) * g * g, v)
      return _cast_like(-step_size * m / (jnp.sqrt(v) + eps_hat), m), m, v

    deltas, (m, v) = fused.update(
        "adam", formula, (beta1, 1 - beta1, beta2, 1 - beta2, -step_size, eps_hat), grads,
        (state.m, state.v), params, extra_args.get(fused.APPLY_ARG, False))
    return deltas, AdamState(count=t, m=m, v=v)

  return _rule(init_fn, update_fn)


def weights_only_mask(params: Params) -> Params:
  """True for weights (leaves with ``ndim >= 2``: dense and conv kernels), False for biases and
  batch-norm scales/offsets (``ndim <= 1``)."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def weight_decay_rule(weight_decay: jax.Array,
                      mask: Callable[[Params], Params] | Params | None = weights_only_mask
                      ) -> optax.GradientTransformation:
  """L2 weight decay on the gradient: ``g += weight_decay * x`` where ``mask`` is True."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(grads, state, params=None):
    if params is None:
      raise ValueError("add_weight_decay needs params: call tx.update(grads, state, params)")
    selected = jax.tree.map(lambda _: True, params) if mask is None else (
        mask(params) if callable(mask) else mask)
    grads = jax.tree.map(
        lambda g, x, on: _cast_like(g + weight_decay * x, g) if on else g, grads, params, selected)
    return grads, state

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- public rules


def _with_learning_rate_scale(rule: Callable[..., optax.GradientTransformation],
                              names: tuple[str, ...]):
  """Factory ``(learning_rate, lr_scale, *names) -> rule(learning_rate * lr_scale, *names)``."""

  def body(learning_rate, lr_scale, **rest):
    return rule(learning_rate=learning_rate * lr_scale, **rest)

  return keyword_factory(body, ("learning_rate", "lr_scale") + names)


def _public(rule, names: tuple[str, ...], **hyperparams) -> optax.GradientTransformationExtraArgs:
  return inject(_with_learning_rate_scale(rule, names), lr_scale=1.0, **hyperparams)


def sgd(learning_rate: ScalarOrSchedule) -> optax.GradientTransformationExtraArgs:
  """Vanilla SGD: ``x += -learning_rate * g``."""
  validation.check_non_negative("learning_rate", learning_rate)
  return _public(sgd_rule, (), learning_rate=learning_rate)


def momentum(learning_rate: ScalarOrSchedule, mu: ScalarOrSchedule = 0.9
             ) -> optax.GradientTransformationExtraArgs:
  """Momentum, velocity form: ``v = mu * v - learning_rate * g; x += v`` (see ``momentum_rule``
  for how it differs from ``optax.sgd(momentum=...)`` under a changing learning rate)."""
  validation.check_non_negative("learning_rate", learning_rate)
  validation.check_unit_interval("mu", mu)
  return _public(momentum_rule, ("mu",), learning_rate=learning_rate, mu=mu)


def nesterov(learning_rate: ScalarOrSchedule, mu: ScalarOrSchedule = 0.9
             ) -> optax.GradientTransformationExtraArgs:
  """Nesterov momentum, rewritten form:
  ``v_prev = v; v = mu * v - learning_rate * g; x += -mu * v_prev + (1 + mu) * v``."""
  validation.check_non_negative("learning_rate", learning_rate)
  validation.check_unit_interval("mu", mu)
  return _public(nesterov_rule, ("mu",), learning_rate=learning_rate, mu=mu)


def nesterov_lookahead(learning_rate: ScalarOrSchedule, mu: ScalarOrSchedule = 0.9
                       ) -> optax.GradientTransformationExtraArgs:
  """Nesterov momentum, look-ahead form:
  ``x_ahead = x + mu * v; g = grad(x_ahead); v = mu * v - learning_rate * g; x += v``.

  The gradient passed to ``update`` must be evaluated at ``gradient_point(params, opt_state)``::

      grads = jax.grad(loss)(research.optim.gradient_point(params, opt_state))
      deltas, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, deltas)

  (``gradient_point`` returns ``params`` unchanged for every other rule, so a train step can call
  it unconditionally.) With a scheduled ``mu`` the look-ahead uses the ``mu`` the next update
  will use, as in the formula.
  """
  validation.check_non_negative("learning_rate", learning_rate)
  validation.check_unit_interval("mu", mu)
  return _public(nesterov_lookahead_rule, ("mu", "next_mu"), learning_rate=learning_rate, mu=mu,
                 next_mu=next_count_schedule(mu))


def gradient_point(params: Params, opt_state: Any) -> Params:
  """Where the next gradient must be evaluated: ``x + mu * v`` for ``nesterov_lookahead``
  (found anywhere inside ``opt_state``), ``params`` itself for every other rule."""
  state = find_state(opt_state, LookaheadState)
  if state is None:
    return params
  return jax.tree.map(lambda x, v: _cast_like(x + state.mu * v, x), params, state.velocity)


def adagrad(learning_rate: ScalarOrSchedule, eps: float = 1e-8
            ) -> optax.GradientTransformationExtraArgs:
  """Adagrad: ``cache += g**2; x += -learning_rate * g / (sqrt(cache) + eps)``."""
  validation.check_non_negative("learning_rate", learning_rate)
  validation.check_positive("eps", eps)
  return _public(adagrad_rule, ("eps",), learning_rate=learning_rate, eps=eps)


def rmsprop(learning_rate: ScalarOrSchedule, decay_rate: ScalarOrSchedule = 0.99,
            eps: float = 1e-8) -> optax.GradientTransformationExtraArgs:
  """RMSprop: ``cache = decay_rate * cache + (1 - decay_rate) * g**2;
  x += -learning_rate * g / (sqrt(cache) + eps)``."""
  validation.check_non_negative("learning_rate", learning_rate)
  validation.check_unit_interval("decay_rate", decay_rate)
  validation.check_positive("eps", eps)
  return _public(rmsprop_rule, ("decay_rate", "eps"), learning_rate=learning_rate,
                 decay_rate=decay_rate, eps=eps)


def adam(learning_rate: ScalarOrSchedule, beta1: ScalarOrSchedule = 0.9,
         beta2: ScalarOrSchedule = 0.999, eps: float = 1e-8, bias_correction: bool = True
         ) -> optax.GradientTransformationExtraArgs:
  """Adam with bias correction (``t`` from 1), or the simplified update without it::

      m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g**2
      x += -learning_rate * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)
  """
  validation.check_non_negative("learning_rate", learning_rate)
  validation.check_unit_interval("beta1", beta1)
  validation.check_unit_interval("beta2", beta2)
  validation.check_positive("eps", eps)
  if not isinstance(bias_correction, bool):
    raise ValueError(f"bias_correction must be True or False, got {bias_correction!r}")
  return _public(adam_rule, ("beta1", "beta2", "eps", "bias_correction"),
                 learning_rate=learning_rate, beta1=beta1, beta2=beta2, eps=eps,
                 bias_correction=bias_correction)


def add_weight_decay(weight_decay: ScalarOrSchedule,
                     mask: Callable[[Params], Params] | Params | None = weights_only_mask
                     ) -> optax.GradientTransformationExtraArgs:
  """L2 regularization through the optimizer: ``g += weight_decay * x`` on masked leaves.

  Chained BEFORE a rule (``optax.chain(add_weight_decay(wd), sgd(lr))``) this is exactly the
  gradient of an extra loss term ``0.5 * weight_decay * sum(x**2)`` over the masked leaves, i.e.
  ``config.loss.l2 = wd`` gives the same trajectory (for adaptive rules too, since the rule sees the
  same total gradient; this is L2, not AdamW's decoupled decay). The default mask decays weights
  (kernels, ``ndim >= 2``) and not biases or batch-norm parameters; ``mask=None`` decays everything.
  ``update`` needs ``params``.
  """
  validation.check_non_negative("weight_decay", weight_decay)
  return inject(keyword_factory(weight_decay_rule, ("weight_decay", "mask")), static_args=("mask",),
                weight_decay=weight_decay, mask=mask)
