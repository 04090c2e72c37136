"""K models trained at once: stacked on a leading member axis, one compiled program.

The members of one call share the data, the architecture, the update rule and the batch size, and
may differ in every value that changes no shape (:data:`VARYING_PATHS`):

* the seed: initialization, data order (``epoch_permutation(seed, epoch, n)``, as a single run)
  and dropout keys;
* what only the initialization reads (``model.init``, ``init_std``, ``output_scale``): each
  member's state is built from its own config (members with the same settings: one vmapped init);
* optimizer hyperparameters (``learning_rate``, ``mu``, ``weight_decay``, ``beta1``, ``beta2``,
  ``decay_rate``, ``eps``): they live in the optimizer state, so each member's state carries its
  own values (``research.optim.init_population``);
* the L2 strength ``loss.l2``: its gradient ``l2 * W`` on the kernels is exactly the optimizer's
  weight decay on the weights (``ndim >= 2``), so a member's ``l2`` is added to its
  ``weight_decay`` and the reported training loss gets ``l2 * 0.5 * sum W**2`` back (not for
  ``nesterov_lookahead``, whose loss gradient is taken at the look-ahead point);
* the dropout rate ``model.dropout``: flax's ``nn.Dropout`` keeps its rate as a Python number, so
  the model's Dropout calls are intercepted (``flax.linen.intercept_methods``) and replaced by the
  same inverted dropout with the member's rate as a traced value (same key, same draw).

Every member takes the single run's step (``make_train_step``, i.e. ``apply_update``), ``jax.vmap``
-ped, so member ``k`` equals ``train_and_evaluate(configs[k])`` up to float reassociation. Per
member: the best validation epoch (its variables are kept), reduce-on-plateau, divergence (NaN/Inf
or a batch loss above ``divergence_factor`` x its first loss stops that member only), and stopping
by ``on_epoch_end`` (search pruning). The program stops when every member has stopped.

An epoch is one ``lax.scan`` over the steps of the vmapped step (one dispatch per epoch: best for
small dense models), a Python loop over the jitted vmapped step, or the members one after another
with the single run's step (on XLA:CPU a batched convolution is slower than K single ones, and a
convolution inside a scan's while loop ~7x slower): ``epoch_mode='auto'`` picks ``each`` for
convolutional models on CPU, ``scan`` otherwise (:func:`make_members_epoch`).

On a machine with several devices the members axis is split over them
(``research.train.parallel.MembersParallel``: ``NamedSharding(mesh, P('members'))`` on the stacked
state, the data replicated): each device trains its own members in the same compiled program. The
results are those of one device up to float reassociation (XLA's kernels for 1 and for 8 members
add in different orders, as between populations of different sizes on one device).

In a run of several processes (``jax.distributed``, e.g. ``scripts/ablate.py`` on a SLURM job) the
members train data parallel as a single run does (``research.train.parallel.DataParallel`` over
every device of every process): the stacked state is replicated, every step's ``(K, B, ...)``
batches are split along B, each process reads only its rows of them, and ``jax.jit`` inserts the
gradient all-reduce (:func:`make_data_parallel_epoch`). The returned state and variables are then
global, replicated arrays (every process holds them whole); process 0 alone writes the records,
and the checkpoints are saved by every process through orbax.
"""
from __future__ import annotations

import contextlib
import functools
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

from research import models, optim
from research.launch.config_tree import flatten_config
from research.optim.hyperparams import find_hyperparams_state
from research.train import distributed
from research.train.evaluation import evaluate, make_members_eval_step
from research.train.experiment import Experiment, build_experiment
from research.train.losses import l2_penalty
from research.train.parallel import DataParallel, MembersParallel
from research.train.state import TrainState, epoch_permutation, make_init
from research.train.steps import make_train_step

#: Optimizer fields that may differ between members (they are hyperparameters in the state).
OPTIMIZER_FIELDS = ("learning_rate", "mu", "weight_decay", "beta1", "beta2", "decay_rate", "eps")
#: Config fields read only when a member is initialized.
INIT_PATHS = ("model.init", "model.output_scale", "model.init_std")
#: Every config field that may differ between the members of one call.
VARYING_PATHS = tuple(f"optimizer.{f}" for f in OPTIMIZER_FIELDS) + (
    "loss.l2", "model.dropout", "seed") + INIT_PATHS
EPOCH_MODES = ("auto", "scan", "loop", "each")
#: Models whose members train faster one by one than vmapped (batched convolutions) or scanned
#: (convolutions in a while loop) on XLA:CPU (measured: scripts/bench/bench_train.py).
_EACH_MODELS = ("cnn", "cnn1d")


def stack(trees: Sequence[Any]) -> Any:
  """Same-structured pytrees stacked along a new leading (member) axis."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, index: int) -> Any:
  """Member ``index`` of a stacked pytree."""
  return jax.tree.map(lambda leaf: leaf[index], tree)


def select(mask: Any, new: Any, old: Any) -> Any:
  """Per member (leading axis): ``new`` where ``mask`` else ``old``."""
  mask = jnp.asarray(mask)

  def pick(a, b):
    return jnp.where(mask.reshape((-1,) + (1,) * (jnp.ndim(a) - 1)), a, b)

  return jax.tree.map(pick, new, old)


class MembersResult(NamedTuple):
  """The outcome of :func:`train_members` (arrays and lists have one entry per member)."""
  configs: list
  experiment: Experiment            # the shared model, data and rule
  state: TrainState                 # final, stacked
  history: list[list[dict]]         # per member, its per-epoch records (a single run's keys)
  best_val_accuracy: np.ndarray     # (K,), -1 when a member never finished an epoch
  best_epoch: np.ndarray            # (K,)
  best_variables: dict              # stacked {'params', 'batch_stats'} of each best epoch
  errors: list[str | None]          # divergence message, or None


def check_compatible(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """Raises ValueError naming the first field (outside :data:`VARYING_PATHS`) that differs."""
  if not configs:
    raise ValueError("train at least one member (no config given).")
  first = flatten_config(configs[0])
  for index, config in enumerate(configs[1:], 1):
    other = flatten_config(config)
    for path in sorted(first.keys() | other.keys()):
      if path in VARYING_PATHS or first.get(path) == other.get(path):
        continue
      raise ValueError(
          f"member {index} differs from member 0 in {path!r} ({other.get(path)!r} vs "
          f"{first.get(path)!r}); members may differ only in {', '.join(VARYING_PATHS)}.")
  l2s = {float(c.loss.l2) for c in configs}
  if len(l2s) > 1 and configs[0].optimizer.name == "nesterov_lookahead":
    raise ValueError("loss.l2 differs between members, which are trained with it as weight "
                     "decay; with optimizer 'nesterov_lookahead' the two differ (the loss "
                     "gradient is taken at the look-ahead point). Vary optimizer.weight_decay "
                     "instead, or train the members one by one.")
  if configs[0].averaging.get("export", "raw") != "raw":
    raise ValueError(f"config.averaging.export={configs[0].averaging.export!r}: members are "
                     "ranked by their raw parameters; use export='raw' (the averages are still "
                     "kept in each member's state).")


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


class Plan(NamedTuple):
  """How the members are built from their configs."""
  step_config: ml_collections.ConfigDict  # the config the shared step is built from
  hyperparams: dict[str, np.ndarray]      # optimizer state values per member
  l2: np.ndarray                          # per member, trained as weight decay (or zeros)
  dropout: np.ndarray | None              # per member when it differs, else None
  seeds: list[int]


def plan(configs: Sequence[ml_collections.ConfigDict]) -> Plan:
  """The shared step config and the per-member values (see the module docstring)."""
  check_compatible(configs)
  step_config = ml_collections.ConfigDict(configs[0].to_dict())
  l2 = np.array([float(c.loss.l2) for c in configs])
  if len(set(l2.tolist())) > 1:
    step_config.loss.l2 = 0.0
  else:
    l2 = np.zeros_like(l2)
  names = [f for f in OPTIMIZER_FIELDS if f in configs[0].optimizer]
  hyperparams = {f: np.array([float(c.optimizer[f]) for c in configs]) for f in names}
  hyperparams["weight_decay"] = hyperparams.get("weight_decay", np.zeros(len(configs))) + l2
  if np.any(hyperparams["weight_decay"]):
    # The rule chains its weight decay only when it is non-zero: build the shared rule with
    # one, then every member's own value (zero included) is written into its state.
    step_config.optimizer.weight_decay = float(np.max(hyperparams["weight_decay"]))
  rates = np.array([float(c.model.dropout) for c in configs])
  dropout = None
  if len(set(rates.tolist())) > 1:
    dropout = rates
    step_config.model.dropout = 0.5  # any rate > 0 creates the Dropout layers; intercepted
  return Plan(step_config, hyperparams, l2, dropout, [int(c.seed) for c in configs])


def init_members(experiment: Experiment, configs: Sequence[ml_collections.ConfigDict],
                 the_plan: Plan) -> TrainState:
  """The stacked initial state: member k from ``configs[k]`` (seed, init), with its own
  optimizer hyperparameters written into the optimizer state."""
  state = _init_stacked(experiment, configs)
  # Only the values the rule keeps in its state and no schedule overwrites (Adam has no mu).
  held = find_hyperparams_state(unstack(state.opt_state, 0))
  settable = set(held.hyperparams) - set(held.hyperparams_states)
  return state.replace(opt_state=optim.init_population(experiment.tx, state.params, {
      name: jnp.asarray(values) for name, values in the_plan.hyperparams.items()
      if name in settable}))


def _init_stacked(experiment: Experiment, configs: Sequence[ml_collections.ConfigDict]
                  ) -> TrainState:
  """Every member's initial state, stacked: the members that share their initialization
  settings (``model.init``, ``output_scale``, averaging) are one vmapped init over their seeds,
  compiled once, instead of one compiled init per member."""
  groups: dict[str, list[int]] = {}
  for index, config in enumerate(configs):
    key = json.dumps([config.model.to_dict(), config.averaging.to_dict()], sort_keys=True,
                     default=str)
    groups.setdefault(key, []).append(index)
  dataset = experiment.dataset
  stacked = []
  for indices in groups.values():
    config = configs[indices[0]]
    model = models.create_model(config.model, dataset.num_classes, dataset.image_shape)
    init = make_init(config, model, experiment.tx, dataset.input_shape,
                     experiment.steps_per_epoch)
    keys = jnp.stack([jax.random.PRNGKey(int(configs[i].seed)) for i in indices])
    stacked.append((indices, jax.jit(jax.vmap(init))(keys)))
  if len(stacked) == 1:
    return stacked[0][1]
  members: list[Any] = [None] * len(configs)
  for indices, group in stacked:
    for position, index in enumerate(indices):
      members[index] = unstack(group, position)
  return stack(members)


def make_single_member_step(train_step: Callable, l2_varies: bool, dropout_varies: bool
                            ) -> Callable:
  """``step(state, l2, rate, x, y) -> (state, (loss, accuracy))`` of ONE member: the single
  run's ``train_step`` with the member's dropout rate (intercepted) and its L2 (trained as weight
  decay, added back to the reported loss)."""

  def member_step(state, l2, rate, x, y):
    context = (nn.intercept_methods(dropout_interceptor(rate)) if dropout_varies
               else contextlib.nullcontext())
    with context:
      new_state, metrics = train_step(state, x, y)
    loss = metrics["loss"]
    if l2_varies:  # the single run's loss: data + l2 * 0.5 * sum W**2 at the same parameters
      loss = loss + l2.astype(loss.dtype) * l2_penalty(state.params).astype(loss.dtype)
    return new_state, (loss, metrics["accuracy"])

  return member_step


def make_member_step(train_step: Callable, l2_varies: bool, dropout_varies: bool) -> Callable:
  """``step(states, l2, rates, x, y) -> (states, (losses, accuracies))``, vmapped over members:
  ``x`` is ``(K, B, ...)``, one batch per member."""
  return jax.vmap(make_single_member_step(train_step, l2_varies, dropout_varies))


def make_members_epoch(single_step: Callable, mode: str) -> Callable:
  """``epoch(states, l2, rates, x, y, perms) -> (states, losses (K, steps), accuracy (K,))``.

  ``single_step``: :func:`make_single_member_step`. ``perms`` ``(K, steps, B)``: member k's
  example indices of each step. Modes (``scripts/bench/bench_train.py`` measures them):

  * ``'scan'``: one jitted ``lax.scan`` over the steps of the vmapped step (one dispatch per
    epoch: the fastest for small dense models);
  * ``'loop'``: a Python loop over the jitted vmapped step;
  * ``'each'``: the members one after another, each with the single run's step (XLA:CPU runs a
    vmapped, batched convolution slower than the members' convolutions one by one, and a
    convolution inside a scan's while loop ~7x slower: convolutional members train this way).
  """
  member_step = jax.vmap(single_step)
  if mode == "scan":
    def scanned(states, l2, rates, x, y, perms):
      def body(states, idx):
        return member_step(states, l2, rates, x[idx], y[idx])
      states, (losses, accuracies) = jax.lax.scan(body, states, jnp.swapaxes(perms, 0, 1))
      return states, losses.T, jnp.mean(accuracies, axis=0)
    return jax.jit(scanned, donate_argnums=0)

  # The step index goes in as a number and the batch is gathered inside the jitted step: indexing
  # a device array from Python (perms[m, i], l2[m]) would be one more dispatch per step.
  if mode == "each":
    @functools.partial(jax.jit, donate_argnums=0)
    def member_one_step(state, l2, rate, x, y, member_perms, i):
      idx = member_perms[i]
      return single_step(state, l2, rate, x[idx], y[idx])

    def each(states, l2, rates, x, y, perms):
      members, losses, accuracies = [], [], []
      for m in range(perms.shape[0]):
        state, member_losses, member_accuracies = unstack(states, m), [], []
        member_perms, member_l2, member_rate = perms[m], l2[m], rates[m]
        for i in range(perms.shape[1]):
          state, (loss, accuracy) = member_one_step(state, member_l2, member_rate, x, y,
                                                    member_perms, i)
          member_losses.append(loss)
          member_accuracies.append(accuracy)
        members.append(state)
        losses.append(jnp.stack(member_losses))
        accuracies.append(jnp.mean(jnp.stack(member_accuracies)))
      return stack(members), jnp.stack(losses), jnp.stack(accuracies)
    return each

  @functools.partial(jax.jit, donate_argnums=0)
  def one_step(states, l2, rates, x, y, perms, i):
    idx = perms[:, i]
    return member_step(states, l2, rates, x[idx], y[idx])

  def looped(states, l2, rates, x, y, perms):
    losses, accuracies = [], []
    for i in range(perms.shape[1]):
      states, (loss, accuracy) = one_step(states, l2, rates, x, y, perms, i)
      losses.append(loss)
      accuracies.append(accuracy)
    return states, jnp.stack(losses, axis=1), jnp.mean(jnp.stack(accuracies), axis=0)
  return looped


def make_data_parallel_epoch(single_step: Callable, parallel: DataParallel) -> Callable:
  """The members' epoch of a multi-process run: ``epoch(states, l2, rates, x, y, perms)`` as
  :func:`make_members_epoch`'s, with ``x``, ``y`` and ``perms`` on the host.

  Each step's batches ``(K, B, ...)`` are split along B over every device of every process
  (``P(None, 'data')``); this process reads only its rows of them (``parallel.local_rows``),
  the state stays replicated, so the step is one program over all processes whose gradient
  means ``jax.jit`` all-reduces; the same global batches as one process, in the same order.
  """
  member_step = jax.jit(jax.vmap(single_step), donate_argnums=0,
                        out_shardings=parallel.replicated)

  def epoch(states, l2, rates, x, y, perms):
    rows = parallel.local_rows(perms.shape[2])
    losses, accuracies = [], []
    for i in range(perms.shape[1]):
      idx = perms[:, i, rows]
      batch_x, batch_y = parallel.shard_batches(x[idx], y[idx])
      states, (loss, accuracy) = member_step(states, l2, rates, batch_x, batch_y)
      parallel.throttle(i, 1, loss)
      losses.append(loss)
      accuracies.append(accuracy)
    return states, jnp.stack(losses, axis=1), jnp.mean(jnp.stack(accuracies), axis=0)
  return epoch


def choose_epoch_mode(config: Any, mode: str = "auto") -> str:
  """``'each'`` for convolutional models on CPU, ``'scan'`` otherwise (or ``mode`` when not
  auto)."""
  if mode not in EPOCH_MODES:
    raise ValueError(f"epoch_mode={mode!r} is unknown; known: {', '.join(EPOCH_MODES)}.")
  if mode != "auto":
    return mode
  if config.model.name in _EACH_MODELS and jax.default_backend() == "cpu":
    return "each"
  return "scan"


def member_permutations(seeds: Sequence[int], epoch: int, n: int, steps: int,
                        batch_size: int) -> np.ndarray:
  """``(K, steps, batch_size)``: each member's batches of ``epoch``, as its single run's."""
  return np.stack([epoch_permutation(s, epoch, n)[:steps * batch_size]
                   .reshape(steps, batch_size) for s in seeds])


def _divergence(losses: np.ndarray, reference: float, factor: float, epoch: int, steps: int,
                learning_rate: float) -> str | None:
  bad = ~np.isfinite(losses) | (losses > factor * reference)
  if not bad.any():
    return None
  first = int(np.argmax(bad))
  return (f"training diverged in epoch {epoch + 1} at step {epoch * steps + first + 1}: loss "
          f"{losses[first]:.4g} (first loss {reference:.4g}, factor {factor:g}); learning rate "
          f"{learning_rate:.3g}")


def _write_metrics(workdir: str, row: dict) -> None:
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps(row) + "\n")


def train_members(configs: Sequence[ml_collections.ConfigDict],
                  workdirs: Sequence[str] | None = None, *,
                  on_epoch_end: Callable[[int, list], Sequence[bool]] | None = None,
                  on_snapshot: Callable[[int, dict, dict], None] | None = None,
                  dataset=None, epoch_mode: str = "auto",
                  log: Callable[[str], None] | None = None,
                  devices: Sequence[Any] | None = None) -> MembersResult:
  """Trains ``len(configs)`` members at once in one vmapped, jitted program.

  Args:
    configs: the members' experiment configs; they may differ only in :data:`VARYING_PATHS`.
    workdirs: optional, one per member: ``metrics.jsonl`` gets one row per epoch (a single
      run's epoch rows) and, when ``config.checkpoint.enabled``, the member's best-epoch state is
      saved as a ``research.train`` checkpoint (``restore_best`` reads it). With several
      processes each returns once process 0 has written them.
    on_epoch_end: ``f(epoch, records) -> stop flags``: ``epoch`` 0-based; ``records[k]`` member
      k's record (keys as ``train_and_evaluate``'s history), None for a member already stopped; a
      True flag stops member k (e.g. pruning).
    on_snapshot: ``f(epoch, stacked_variables, info)`` after every epoch (1-based ``epoch``;
      ``info`` has ``val_accuracy`` per member), e.g. to save checkpoint-ensemble snapshots.
    dataset: a loaded ``research.data.Dataset`` (default: ``load_dataset(config.data)``).
    epoch_mode: ``'auto'``, ``'scan'``, ``'loop'`` or ``'each'`` (:func:`make_members_epoch`).
    log: optional ``print``-like callable, one line per epoch.
    devices: the devices the members are split over (default: every local device); the most of
      them that divide ``len(configs)`` evenly are used (one device: nothing is split). Not read
      in a multi-process run: the members train data parallel over every device of every
      process (module docstring).

  Raises:
    ValueError: configs that differ elsewhere, or a bad config value.
  """
  from research.train.config_checks import validate_config
  k = len(configs)
  the_plan = plan(configs)
  base = the_plan.step_config
  if workdirs is not None and len(workdirs) != k:
    raise ValueError(f"{len(workdirs)} workdirs for {k} configs.")
  for config in configs:
    validate_config(config)
  experiment = build_experiment(base, dataset)
  dataset, steps, batch_size = experiment.dataset, experiment.steps_per_epoch, experiment.batch_size
  state = init_members(experiment, configs, the_plan)
  data_parallel = jax.process_count() > 1
  if data_parallel:   # several processes: one data-parallel program over all their devices
    parallel = DataParallel()
    parallel.check_batch_size(batch_size)
    by_member = shared = parallel.replicate
    state = parallel.replicate(state)
  else:   # each device trains its own members; the data is on every device
    spread = MembersParallel(k, devices)
    by_member, shared = ((spread.shard, spread.replicate) if spread.num_devices > 1
                         else (jnp.asarray, jnp.asarray))
    if spread.num_devices > 1:
      state = spread.shard(state)
  float_dtype = jnp.result_type(float)  # what a Python-float dropout rate becomes in flax
  rates = by_member(jnp.asarray(the_plan.dropout if the_plan.dropout is not None else np.zeros(k),
                                float_dtype))
  l2 = by_member(jnp.asarray(the_plan.l2, float_dtype))
  single_step = make_single_member_step(make_train_step(experiment.model, experiment.tx, base),
                                        bool(np.any(the_plan.l2)), the_plan.dropout is not None)
  if data_parallel:
    epoch_fn = make_data_parallel_epoch(single_step, parallel)
  else:
    epoch_fn = make_members_epoch(single_step, choose_epoch_mode(base, epoch_mode))
  eval_step = make_members_eval_step(experiment.model)
  plateau = experiment.plateau
  plateau_states = [plateau.init() for _ in range(k)] if plateau else None
  # (data parallel: each process gathers its own rows of every batch on the host)
  x_train, y_train = ((dataset.x_train, dataset.y_train) if data_parallel
                      else (shared(dataset.x_train), shared(dataset.y_train)))
  n = len(dataset.x_train)
  factor = float(base.train.divergence_factor)
  reference = np.full(k, np.nan)
  active = np.ones(k, bool)
  errors: list[str | None] = [None] * k
  history: list[list[dict]] = [[] for _ in range(k)]
  best_acc, best_epoch = np.full(k, -1.0), np.zeros(k, np.int64)
  best_variables = jax.tree.map(jnp.copy, {"params": state.params,
                                           "batch_stats": state.batch_stats})
  keep_best_state = workdirs is not None and bool(base.checkpoint.enabled)
  best_state = jax.tree.map(jnp.copy, state) if keep_best_state else None
  for epoch in range(int(base.train.num_epochs)):
    start = time.perf_counter()
    perms = member_permutations(the_plan.seeds, epoch, n, steps, batch_size)
    state, losses, accuracies = epoch_fn(state, l2, rates, x_train, y_train,
                                         perms if data_parallel else by_member(perms))
    losses = np.asarray(jax.device_get(losses), np.float64)
    accuracies = np.asarray(jax.device_get(accuracies), np.float64)
    learning_rates = np.asarray(jax.vmap(optim.get_learning_rate)(state.opt_state), np.float64)
    if epoch == 0:
      reference = losses[:, 0].copy()
    val = evaluate(eval_step, state.params, state.batch_stats, dataset.x_val, dataset.y_val,
                   int(base.train.eval_batch_size), shared)
    records: list[dict | None] = [None] * k
    for m in np.flatnonzero(active):
      errors[m] = _divergence(losses[m], reference[m], factor, epoch, steps, learning_rates[m])
      if errors[m]:
        active[m] = False
        continue
      records[m] = {"epoch": epoch + 1, "train_loss": float(losses[m].mean()),
                    "train_accuracy": float(accuracies[m]),
                    "learning_rate": float(learning_rates[m]),
                    "val_loss": float(val["loss"][m]), "val_accuracy": float(val["accuracy"][m])}
    # Ties go to the later epoch, as a single run's best checkpoint (orbax BestN) does.
    improved = np.array([r is not None and r["val_accuracy"] >= best_acc[m]
                         for m, r in enumerate(records)])
    best_acc = np.where(improved, val["accuracy"], best_acc)
    best_epoch = np.where(improved, epoch + 1, best_epoch)
    if improved.any():
      best_variables = select(improved, {"params": state.params,
                                         "batch_stats": state.batch_stats}, best_variables)
      if keep_best_state:
        best_state = select(improved, state, best_state)
    if plateau:
      for m in np.flatnonzero(active):
        plateau_states[m] = plateau.update(plateau_states[m], float(val["accuracy"][m]))
      scales = jnp.asarray([ps.scale for ps in plateau_states], jnp.float32)
      state = state.replace(opt_state=jax.vmap(optim.scale_learning_rate)(state.opt_state, scales))
    elapsed = time.perf_counter() - start
    for m, record in enumerate(records):
      if record is None:
        continue
      record["time"] = elapsed
      history[m].append(record)
      if workdirs is not None and distributed.is_main():   # one writer in a multi-process run
        _write_metrics(workdirs[m], record)
    if on_snapshot is not None:
      on_snapshot(epoch + 1, {"params": state.params, "batch_stats": state.batch_stats},
                  {"epoch": epoch + 1, "seeds": the_plan.seeds,
                   "val_accuracy": [float(a) for a in val["accuracy"]]})
    if log:
      log(f"epoch {epoch + 1}: val acc " + " ".join(
          "-" if r is None else f"{r['val_accuracy']:.4f}" for r in records)
          + f" ({elapsed:.1f}s)")
    if on_epoch_end is not None:
      # Process 0's flags on every process: none trains a member the others stopped.
      flags = distributed.agreed([bool(f) for f in on_epoch_end(epoch, records)])
      for m, stop in enumerate(flags):
        if stop and records[m] is not None:
          active[m] = False
    if not active.any():
      break
  if keep_best_state:
    _save_best(workdirs, best_state, best_acc, best_epoch)
  if workdirs is not None:   # every process returns once process 0 has written the records
    distributed.barrier("train_members: the records are written")
  return MembersResult(list(configs), experiment, state, history, best_acc, best_epoch,
                       best_variables, errors)


def _save_best(workdirs, best_state, best_acc, best_epoch) -> None:
  """Each member's best-epoch state as a ``research.train`` checkpoint in its workdir."""
  from research.train import checkpoints
  for m, workdir in enumerate(workdirs):
    if best_epoch[m] < 1 or not math.isfinite(best_acc[m]):
      continue
    ckpts = checkpoints.Checkpoints(workdir, 1, 1)
    try:
      ckpts.save(int(best_epoch[m]), unstack(best_state, m),
                 {"epoch": int(best_epoch[m]), "val_accuracy": float(best_acc[m]),
                  "members": True}, float(best_acc[m]))
    finally:
      ckpts.close()
