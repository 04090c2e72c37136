"""Hyperparameters kept in the optimizer STATE, via ``optax.inject_hyperparams``.

Every transformation built by ``research.optim`` (the public rules and ``get_optimizer``) is an
``optax.inject_hyperparams`` wrapper around a plain rule, so its state is an
``optax.InjectStatefulHyperparamsState`` whose ``hyperparams`` dict holds the current numeric
hyperparameters as arrays. That buys three things without recompiling:

* schedules: a hyperparameter given as a callable of the update count is re-evaluated every step;
* plateau scaling: the learning rate actually used is
  ``learning_rate * lr_schedule * lr_scale``; ``scale_learning_rate`` writes ``lr_scale``;
* populations: ``init_population`` gives each member its own hyperparameter values, and
  ``jax.vmap(tx.update)`` then trains all members in one program.

Hyperparameters are stored in at least float32 (float64 for float64 parameters): bfloat16 cannot
represent ``beta2 = 0.999`` (it rounds to 1.0, which would freeze Adam's second moment).
"""
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

HyperparamsState = optax.InjectStatefulHyperparamsState

#: Hyperparameters multiplied together into the learning rate the rule uses.
LEARNING_RATE_FACTORS = ("learning_rate", "lr_schedule", "lr_scale")


def hyperparam_dtype(tree: Any) -> jnp.dtype:
  """The dtype hyperparameters are stored in: the tree's widest float, at least float32."""
  leaves = [leaf for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(leaf), jnp.floating)]
  widest = jnp.float32
  for leaf in leaves:
    widest = jnp.promote_types(widest, jnp.result_type(leaf))
  return widest


def keyword_factory(body: Callable[..., optax.GradientTransformation],
                    names: tuple[str, ...]) -> Callable[..., optax.GradientTransformation]:
  """Gives ``body(**kwargs)`` the explicit keyword signature ``names``.

  ``optax.inject_hyperparams`` discovers hyperparameters by binding the factory's signature, so a
  factory that forwards ``**kwargs`` needs its parameters spelled out.
  """
  def factory(**kwargs):
    return body(**kwargs)

  factory.__signature__ = inspect.Signature(
      [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in names])
  factory.__name__ = getattr(body, "__name__", "factory")
  return factory


def inject(factory: Callable[..., optax.GradientTransformation], static_args: tuple[str, ...] = (),
           **hyperparams: Any) -> optax.GradientTransformationExtraArgs:
  """``optax.inject_hyperparams(factory)(**hyperparams)`` with float32-or-wider hyperparameters.

  Python ints become floats (so that ``scale_learning_rate`` and populations can set any value);
  booleans and ``static_args`` stay static; callables are schedules of the update count.
  """
  hyperparams = {
      name: float(value) if isinstance(value, int) and not isinstance(value, bool) else value
      for name, value in hyperparams.items()}

  def build(dtype):
    return optax.inject_hyperparams(factory, static_args=static_args, hyperparam_dtype=dtype)(
        **hyperparams)

  def init_fn(params):
    return build(hyperparam_dtype(params)).init(params)

  def update_fn(updates, state, params=None, **extra_args):
    return build(hyperparam_dtype(updates)).update(updates, state, params, **extra_args)

  # research.optim.update_and_apply may ask this update to apply itself in one fused pass (an
  # extra argument other transformations, e.g. optax's line searches, would refuse).
  update_fn.fused_apply = True
  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def find_hyperparams_state(opt_state: Any) -> HyperparamsState:
  """The (first) hyperparameter-carrying state inside ``opt_state`` (searched depth first)."""
  found = find_state(opt_state, HyperparamsState)
  if found is None:
    raise ValueError(
        "opt_state holds no hyperparameters (no optax.InjectStatefulHyperparamsState); build the "
        "optimizer with research.optim.get_optimizer or a research.optim rule")
  return found


def find_state(tree: Any, kind: type) -> Any:
  """The first node of type `kind` in a nest of tuples, NamedTuples, lists and dicts (depth
  first)."""
  if isinstance(tree, kind):
    return tree
  children = (tree.values() if isinstance(tree, Mapping)
              else tree if isinstance(tree, (tuple, list)) else ())
  for child in children:
    found = find_state(child, kind)
    if found is not None:
      return found
  return None


def _replace(tree: Any, kind: type, fn: Callable[[Any], Any]) -> tuple[Any, bool]:
  """Applies ``fn`` to the first node of type ``kind`` (depth first); returns (tree, replaced)."""
  if isinstance(tree, kind):
    return fn(tree), True
  if isinstance(tree, (tuple, list)) and not isinstance(tree, Mapping):
    children = list(tree)
    for index, child in enumerate(children):
      new_child, done = _replace(child, kind, fn)
      if done:
        children[index] = new_child
        rebuilt = type(tree)(*children) if hasattr(tree, "_fields") else type(tree)(children)
        return rebuilt, True
  if isinstance(tree, Mapping):
    for key, child in tree.items():
      new_child, done = _replace(child, kind, fn)
      if done:
        return {**tree, key: new_child}, True
  return tree, False


def get_hyperparams(opt_state: Any) -> dict[str, jax.Array]:
  """The hyperparameters used at the most recent update (at init: those of the first update)."""
  return dict(find_hyperparams_state(opt_state).hyperparams)


def get_learning_rate(opt_state: Any) -> jax.Array:
  """The learning rate of the most recent update: ``learning_rate * lr_schedule * lr_scale``.

  (Before the first update: the learning rate the first update will use.) For a population
  (vmapped state) the result has the population axis.
  """
  hyperparams = find_hyperparams_state(opt_state).hyperparams
  rate = hyperparams["learning_rate"]
  for name in LEARNING_RATE_FACTORS[1:]:
    if name in hyperparams:
      rate = rate * hyperparams[name]
  return rate


def get_cache(opt_state: Any) -> Any:
  """The squared-gradient ``cache`` of an AdaGrad or RMSProp state (same tree as the parameters).

  AdaGrad's is ``sum_t g_t**2``, RMSProp's the running mean ``decay * cache + (1 - decay) * g**2``;
  the effective learning rate of a coordinate is ``learning_rate / (sqrt(cache) + eps)``. For a
  population (vmapped state) every leaf has the population axis.

  Raises:
    ValueError: the state holds no such cache (another rule).
  """
  from research.optim.rules import CacheState   # rules builds on this module
  found = find_state(opt_state, CacheState)
  if found is None:
    raise ValueError("opt_state holds no squared-gradient cache: only adagrad and rmsprop keep "
                     "one")
  return found.cache


def set_hyperparams(opt_state: Any, **values: Any) -> Any:
  """Returns ``opt_state`` with numeric hyperparameters replaced (dtype and shape kept).

  Raises ``ValueError`` for a name that is not a numeric hyperparameter of this state, or one that
  follows a schedule (a scheduled value is recomputed every step, so writing it would be ignored).
  """
  state = find_hyperparams_state(opt_state)
  scheduled = set(state.hyperparams_states)
  settable = sorted(set(state.hyperparams) - scheduled)
  for name in values:
    if name in scheduled:
      raise ValueError(f"hyperparameter {name!r} follows a schedule and cannot be set; settable: "
                       f"{', '.join(settable)}")
    if name not in state.hyperparams:
      raise ValueError(f"unknown hyperparameter {name!r}; settable: {', '.join(settable)}")

  def write(found: HyperparamsState) -> HyperparamsState:
    hyperparams = dict(found.hyperparams)
    for name, value in values.items():
      old = hyperparams[name]
      hyperparams[name] = jnp.broadcast_to(jnp.asarray(value, dtype=old.dtype), jnp.shape(old))
    return found._replace(hyperparams=hyperparams)

  new_state, _ = _replace(opt_state, HyperparamsState, write)
  return new_state


def scale_learning_rate(opt_state: Any, scale: Any) -> Any:
  """Sets the learning-rate multiplier ``lr_scale`` to ``scale`` (absolute, not cumulative).

  The learning rate used from the next update on is ``learning_rate * lr_schedule(epoch) * scale``:
  the plateau factor applies on top of any schedule. Pass ``ReduceOnPlateau``'s ``state.scale``
  (which already accumulates the factors); calling it again with the same value changes nothing.
  Only the value in the state changes, so a jitted train step does not recompile.
  """
  return set_hyperparams(opt_state, lr_scale=scale)


def init_population(tx: optax.GradientTransformation, params: Any,
                    hyperparams: Mapping[str, Any]) -> Any:
  """Optimizer states for a population, each member with its own hyperparameters.

  Args:
    tx: a ``research.optim`` transformation (its constructor values are placeholders).
    params: the population's parameters, every leaf with a leading population axis ``P``.
    hyperparams: name -> array of shape ``(P,)``, e.g. ``{"learning_rate": lrs, "mu": mus}``;
      names that are not given keep the constructor's value for every member.

  Returns:
    A state with a leading axis ``P`` on every leaf. Train with
    ``jax.vmap(tx.update)(grads, states, params)``; ``get_learning_rate(states)`` has shape
    ``(P,)``.
  """
  return jax.vmap(lambda member_params, member_hyperparams: set_hyperparams(
      tx.init(member_params), **member_hyperparams))(params, dict(hyperparams))
