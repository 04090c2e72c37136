"""P trials in one compiled program: ``jax.vmap`` over the hyperparameters that keep shapes.

The members of a population share data, model architecture, update rule and batch size, and
differ in the values that do not change any shape:

* optimizer hyperparameters (``learning_rate``, ``mu``, ``weight_decay``, ``beta1``, ``beta2``,
  ``decay_rate``, ``eps``): they live in the optimizer state (``research.optim`` injects them), so
  each member's state carries its own values (``research.optim.init_population``);
* the L2 strength ``loss.l2``: its gradient ``l2 * W`` on the kernels is exactly the optimizer's
  weight decay on the weights (``ndim >= 2``), so a member's ``l2`` is added to its
  ``weight_decay`` and the reported training loss gets ``l2 * 0.5 * sum W**2`` back (the same
  update and the same loss as a single run; not for ``nesterov_lookahead``, whose loss gradient is
  taken at the look-ahead point);
* the dropout rate ``model.dropout``: flax's ``nn.Dropout`` keeps its rate as a Python number, so
  the calls of the model's Dropout layers are intercepted (``flax.linen.intercept_methods``) and
  replaced by the same inverted dropout with the member's rate as a traced value (same key, same
  ``bernoulli`` draw, so a member equals a single run with that rate);
* the seed: initialization (``create_train_state`` from ``PRNGKey(seed)``), data order
  (``research.train.epoch_permutation(seed, epoch, n)``) and dropout keys.

One epoch is a jitted ``lax.scan`` over the steps of ``jax.vmap(train_step)`` with
``train_step = research.train.make_train_step`` (the single run's step), so member ``k`` equals
a single ``train_and_evaluate`` of ``configs[k]`` up to float reassociation. Divergence (NaN/Inf
or a batch loss above ``divergence_factor`` x the member's first loss) stops that member only; a
member stopped by ``on_epoch_end`` (pruning) stops reporting, and the program stops when every
member has stopped.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research.optim.hyperparams import find_hyperparams_state

#: Optimizer fields that may differ between members (they are hyperparameters in the state).
OPTIMIZER_FIELDS = ("learning_rate", "mu", "weight_decay", "beta1", "beta2", "decay_rate", "eps")
#: Every config field that may differ between the members of one population.
VARYING_PATHS = tuple(f"optimizer.{f}" for f in OPTIMIZER_FIELDS) + (
    "loss.l2", "model.dropout", "seed")


class PopulationResult(NamedTuple):
  """The outcome of :func:`train_population` (lists have one entry per member)."""
  history: list[list[dict]]        # per member, its per-epoch records (as a single run's history)
  best_val_accuracy: np.ndarray     # (P,), -1 when a member never finished an epoch
  best_epoch: np.ndarray            # (P,)
  errors: list[str | None]          # divergence message, or None
  state: Any                        # final stacked TrainState


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flatten(value, path + "."))
    else:
      out[path] = value
  return out


def check_compatible(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """Raises ValueError naming the first field (outside :data:`VARYING_PATHS`) that differs."""
  if not configs:
    raise ValueError("a population needs at least one config.")
  first = _flatten(configs[0].to_dict())
  for index, config in enumerate(configs[1:], 1):
    other = _flatten(config.to_dict())
    for path in sorted(first.keys() | other.keys()):
      if path in VARYING_PATHS or first.get(path) == other.get(path):
        continue
      raise ValueError(
          f"member {index} differs from member 0 in {path!r} ({other.get(path)!r} vs "
          f"{first.get(path)!r}); a population may differ only in {', '.join(VARYING_PATHS)}.")
  l2s = {float(c.loss.l2) for c in configs}
  if len(l2s) > 1 and configs[0].optimizer.name == "nesterov_lookahead":
    raise ValueError("loss.l2 differs between members, which a population trains as weight "
                     "decay; with optimizer 'nesterov_lookahead' the two differ (the loss "
                     "gradient is taken at the look-ahead point). Search optimizer.weight_decay "
                     "instead, or use population = 1.")
  if configs[0].averaging.get("export", "raw") != "raw":
    raise ValueError(f"config.averaging.export={configs[0].averaging.export!r}: a population "
                     "ranks members by their raw parameters only; use export='raw'.")


def dropout_interceptor(rate: jax.Array) -> Callable:
  """A ``flax.linen.intercept_methods`` interceptor: every ``nn.Dropout`` call uses ``rate``.

  Same computation as ``nn.Dropout.__call__`` (same ``make_rng`` key, ``bernoulli(key, 1 -
  rate)`` mask, inputs scaled by ``1 / (1 - rate)``), with ``rate`` a traced value; ``rate = 0``
  keeps every unit (the mask is all ones), as a model without dropout.
  """

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if not isinstance(module, nn.Dropout) or context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    inputs = args[0]
    deterministic = kwargs.get("deterministic", args[1] if len(args) > 1 else None)
    deterministic = module.deterministic if deterministic is None else deterministic
    if deterministic:
      return inputs
    keep = 1.0 - rate
    rng = kwargs.get("rng") or module.make_rng(module.rng_collection)
    shape = list(inputs.shape)
    for dim in module.broadcast_dims:
      shape[dim] = 1
    mask = jnp.broadcast_to(jax.random.bernoulli(rng, p=keep, shape=shape), inputs.shape)
    return jax.lax.select(mask, inputs / keep.astype(inputs.dtype), jnp.zeros_like(inputs))

  return interceptor


def stack_trees(trees: Sequence[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _select(mask: jax.Array, new: Any, old: Any) -> Any:
  """Per member (leading axis): ``new`` where ``mask`` else ``old``."""
  def pick(a, b):
    return jnp.where(mask.reshape((-1,) + (1,) * (jnp.ndim(a) - 1)), a, b)
  return jax.tree.map(pick, new, old)


def _unstack(tree: Any, index: int) -> Any:
  return jax.tree.map(lambda leaf: leaf[index], tree)


class _Plan(NamedTuple):
  """How the population is built from the member configs."""
  step_config: ml_collections.ConfigDict  # the config the shared step is built from
  hyperparams: dict[str, np.ndarray]      # optimizer state values per member
  l2: np.ndarray                          # per member, trained as weight decay (or zeros)
  dropout: np.ndarray | None              # per member when it differs, else None
  seeds: list[int]


def plan(configs: Sequence[ml_collections.ConfigDict]) -> _Plan:
  """The shared step config and the per-member values (see module doc)."""
  check_compatible(configs)
  step_config = ml_collections.ConfigDict(configs[0].to_dict())
  l2 = np.array([float(c.loss.l2) for c in configs])
  l2_varies = len(set(l2.tolist())) > 1
  if l2_varies:
    step_config.loss.l2 = 0.0
  else:
    l2 = np.zeros_like(l2)
  names = [f for f in OPTIMIZER_FIELDS if f in configs[0].optimizer]
  hyperparams = {f: np.array([float(c.optimizer[f]) for c in configs]) for f in names}
  hyperparams["weight_decay"] = hyperparams.get("weight_decay", np.zeros(len(configs))) + l2
  rates = np.array([float(c.model.dropout) for c in configs])
  dropout = None
  if len(set(rates.tolist())) > 1:
    dropout = rates
    step_config.model.dropout = 0.5  # any rate > 0 creates the Dropout layers; intercepted
  return _Plan(step_config, hyperparams, l2, dropout, [int(c.seed) for c in configs])


def make_population_epoch(train_step: Callable, l2_varies: bool, dropout_varies: bool
                          ) -> Callable:
  """``epoch(states, l2, rates, x, y, perms) -> (states, losses (P, steps), accuracies (P,))``."""
  from research.train import l2_penalty  # noqa: PLC0415

  def member_step(state, l2, rate, x, y):
    context = (nn.intercept_methods(dropout_interceptor(rate)) if dropout_varies
               else contextlib.nullcontext())
    with context:
      new_state, metrics = train_step(state, x, y)
    loss = metrics["loss"]
    if l2_varies:  # the single run's loss: data + l2 * 0.5 * sum W**2 at the same parameters
      loss = loss + l2.astype(loss.dtype) * l2_penalty(state.params).astype(loss.dtype)
    return new_state, (loss, metrics["accuracy"])

  def epoch(states, l2, rates, x, y, perms):
    def body(states, idx):  # idx: (P, B) example indices of each member
      return jax.vmap(member_step, in_axes=(0, 0, 0, 0, 0))(states, l2, rates, x[idx], y[idx])
    states, (losses, accuracies) = jax.lax.scan(body, states, jnp.swapaxes(perms, 0, 1))
    return states, losses.T, jnp.mean(accuracies, axis=0)

  return jax.jit(epoch, donate_argnums=0)


def make_population_eval(eval_step: Callable) -> Callable:
  """``f(params, batch_stats, x, y) -> {'loss': (P,), 'accuracy': (P,)}``."""
  return jax.jit(jax.vmap(eval_step, in_axes=(0, 0, None, None)))


def _evaluate(eval_fn, params, batch_stats, x, y, batch_size: int) -> dict[str, np.ndarray]:
  """Per-member means over ``(x, y)``, batch-weighted as ``research.train.evaluate``."""
  outs = [(len(x[s:s + batch_size]), eval_fn(params, batch_stats, jnp.asarray(x[s:s + batch_size]),
                                             jnp.asarray(y[s:s + batch_size])))
          for s in range(0, len(x), batch_size)]
  totals: dict[str, np.ndarray] = {}
  for n, out in outs:
    for key, value in jax.device_get(out).items():
      totals[key] = totals.get(key, 0.0) + np.asarray(value, np.float64) * n
  return {key: value / len(x) for key, value in totals.items()}


def _write_metrics(workdir: str, row: dict) -> None:
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps(row) + "\n")


def train_population(configs: Sequence[ml_collections.ConfigDict],
                     workdirs: Sequence[str] | None = None, *,
                     on_epoch_end: Callable[[int, list], Sequence[bool]] | None = None,
                     dataset=None, log: Callable[[str], None] | None = None) -> PopulationResult:
  """Trains ``len(configs)`` trials at once in one vmapped, jitted program.

  Args:
    configs: the members' experiment configs; they may differ only in :data:`VARYING_PATHS`.
    workdirs: optional, one per member: ``metrics.jsonl`` gets one row per epoch (as a single
      run's epoch rows) and, when ``config.checkpoint.enabled``, the member's best-epoch state is
      saved as a ``research.train`` checkpoint (``restore_best`` reads it).
    on_epoch_end: ``f(epoch, records) -> stop flags``: ``epoch`` 0-based; ``records[k]`` member k's
      record (keys as ``train_and_evaluate``'s history), None for a member already stopped; a
      True flag stops member k (pruning).
    dataset: a loaded ``research.data.Dataset`` (default: ``load_dataset(config.data)``).
    log: optional ``print``-like callable, one line per epoch.

  Raises:
    ValueError: configs that differ elsewhere, or options a population does not support.
  """
  from research import data as data_lib, models, optim, train  # noqa: PLC0415
  p = len(configs)
  the_plan = plan(configs)
  base = the_plan.step_config
  if workdirs is not None and len(workdirs) != p:
    raise ValueError(f"{len(workdirs)} workdirs for {p} configs.")
  train.validate_config(base)
  dataset = data_lib.load_dataset(base.data) if dataset is None else dataset
  n, batch_size = len(dataset.x_train), int(base.train.batch_size)
  steps_per_epoch = n // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"config.train.batch_size={batch_size} is larger than the {n} training "
                     "examples.")
  model = models.create_model(base.model, dataset.num_classes, dataset.image_shape)
  tx = optim.get_optimizer(base.optimizer, steps_per_epoch)
  state = stack_trees([train.create_train_state(c, model, tx, jax.random.PRNGKey(s), dataset,
                                                steps_per_epoch)
                       for c, s in zip(configs, the_plan.seeds)])
  # Only the values the rule keeps in its state and no schedule overwrites (e.g. Adam has no mu).
  held = find_hyperparams_state(_unstack(state.opt_state, 0))
  settable = set(held.hyperparams) - set(held.hyperparams_states)
  state = state.replace(opt_state=optim.init_population(tx, state.params, {
      name: jnp.asarray(values) for name, values in the_plan.hyperparams.items()
      if name in settable}))
  float_dtype = jnp.result_type(float)  # what a Python-float dropout rate becomes in flax
  rates = jnp.asarray(the_plan.dropout if the_plan.dropout is not None else np.zeros(p),
                      float_dtype)
  l2 = jnp.asarray(the_plan.l2, float_dtype)
  epoch_fn = make_population_epoch(train.make_train_step(model, tx, base),
                                   bool(np.any(the_plan.l2)), the_plan.dropout is not None)
  eval_fn = make_population_eval(train.make_eval_step(model))
  plateau = optim.get_plateau(base.optimizer)
  plateau_states = [plateau.init() for _ in range(p)] if plateau else None
  x_train, y_train = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
  factor = float(base.train.divergence_factor)
  reference = np.full(p, np.nan)
  active = np.ones(p, bool)
  errors: list[str | None] = [None] * p
  history: list[list[dict]] = [[] for _ in range(p)]
  best_acc, best_epoch = np.full(p, -1.0), np.zeros(p, np.int64)
  keep_best = workdirs is not None and bool(base.checkpoint.enabled)
  best_state = jax.tree.map(jnp.copy, state) if keep_best else None
  for epoch in range(int(base.train.num_epochs)):
    start = time.perf_counter()
    perms = np.stack([train.epoch_permutation(s, epoch, n)[:steps_per_epoch * batch_size]
                      .reshape(steps_per_epoch, batch_size) for s in the_plan.seeds])
    state, losses, accuracies = epoch_fn(state, l2, rates, x_train, y_train, jnp.asarray(perms))
    losses = np.asarray(jax.device_get(losses), np.float64)
    accuracies = np.asarray(jax.device_get(accuracies), np.float64)
    learning_rates = np.asarray(jax.vmap(optim.get_learning_rate)(state.opt_state), np.float64)
    if epoch == 0:
      reference = losses[:, 0].copy()
    val = _evaluate(eval_fn, state.params, state.batch_stats, dataset.x_val, dataset.y_val,
                    int(base.train.eval_batch_size))
    records: list[dict | None] = [None] * p
    for k in np.flatnonzero(active):
      bad = ~np.isfinite(losses[k]) | (losses[k] > factor * reference[k])
      if bad.any():
        first = int(np.argmax(bad))
        errors[k] = (f"training diverged in epoch {epoch + 1} at step "
                     f"{epoch * steps_per_epoch + first + 1}: loss {losses[k, first]:.4g} "
                     f"(first loss {reference[k]:.4g}, factor {factor:g}); learning rate "
                     f"{learning_rates[k]:.3g}")
        active[k] = False
        continue
      records[k] = {"epoch": epoch + 1, "train_loss": float(losses[k].mean()),
                    "train_accuracy": float(accuracies[k]),
                    "learning_rate": float(learning_rates[k]),
                    "val_loss": float(val["loss"][k]), "val_accuracy": float(val["accuracy"][k])}
    improved = np.array([r is not None and r["val_accuracy"] > best_acc[k]
                         for k, r in enumerate(records)])
    best_acc = np.where(improved, val["accuracy"], best_acc)
    best_epoch = np.where(improved, epoch + 1, best_epoch)
    if keep_best and improved.any():
      best_state = _select(jnp.asarray(improved), state, best_state)
    if plateau:
      for k in np.flatnonzero(active):
        plateau_states[k] = plateau.update(plateau_states[k], float(val["accuracy"][k]))
      scales = jnp.asarray([ps.scale for ps in plateau_states], jnp.float32)
      state = state.replace(opt_state=jax.vmap(optim.scale_learning_rate)(state.opt_state, scales))
    elapsed = time.perf_counter() - start
    for k, record in enumerate(records):
      if record is None:
        continue
      record["time"] = elapsed
      history[k].append(record)
      if workdirs is not None:
        _write_metrics(workdirs[k], record)
    if log:
      log(f"epoch {epoch + 1}: val acc " + " ".join(
          "-" if r is None else f"{r['val_accuracy']:.4f}" for r in records)
          + f" ({elapsed:.1f}s)")
    if on_epoch_end is not None:
      stops = on_epoch_end(epoch, records)
      for k, stop in enumerate(stops):
        if stop and records[k] is not None:
          active[k] = False
    if not active.any():
      break
  if keep_best:
    _save_best(configs, workdirs, best_state, best_acc, best_epoch)
  return PopulationResult(history, best_acc, best_epoch, errors, state)


def _save_best(configs, workdirs, best_state, best_acc, best_epoch) -> None:
  """Each member's best-epoch state as a ``research.train`` checkpoint in its workdir."""
  from research.train import checkpoints  # noqa: PLC0415
  for k, workdir in enumerate(workdirs):
    if best_epoch[k] < 1 or not math.isfinite(best_acc[k]):
      continue
    ckpts = checkpoints.Checkpoints(workdir, 1, 1)
    try:
      ckpts.save(int(best_epoch[k]), _unstack(best_state, k),
                 {"epoch": int(best_epoch[k]), "val_accuracy": float(best_acc[k]),
                  "population": True}, float(best_acc[k]))
    finally:
      ckpts.close()
