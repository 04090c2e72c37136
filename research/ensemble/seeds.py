"""K seeds trained at once: one compiled program ``jax.vmap``-ped over the seed.

The seed decides the initialization, the data order and the dropout keys of a member. The K train
states (from ``research.train.create_train_state``, one per seed) are stacked along a leading
member axis and one epoch is a jitted ``lax.scan`` over the steps of ``jax.vmap(train_step)``,
with ``train_step = research.train.make_train_step(model, tx, config)`` (the same step a single
run uses, so parameter averaging, weight decay and the optimizer's schedules come along). Member k
sees the batches of its own permutation of the training set each epoch, the same permutation a
single run with ``config.seed = seeds[k]`` uses (``research.train.epoch_permutation`` when the
training loop provides it), so the K members equal K separate runs up to float reassociation.

Evaluation is vmapped too (``research.train.make_eval_step``). Each member keeps its own best
validation epoch (like the single run's best checkpoint), and per-epoch snapshots of the stacked
variables can be written for checkpoint ensembles.
"""
from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.averaging import averaged_params, recompute_batch_stats
from research.ensemble.members import Member, unstack_variables
from research.ensemble.snapshots import SnapshotWriter

Params = Any


def default_epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """Data order of ``seed`` at ``epoch`` (0-based); overridden by the training loop's rule."""
  return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def _epoch_permutation() -> Callable[[int, int, int], np.ndarray]:
  from research import train  # noqa: PLC0415 (the training capability is optional at import)
  return getattr(train, "epoch_permutation", default_epoch_permutation)


class SeedsResult(NamedTuple):
  """The outcome of :func:`train_seeds` (everything stacked along the member axis)."""
  seeds: list
  model: Any
  state: Any                 # final stacked TrainState
  best_variables: Any        # per member, {'params', 'batch_stats'} of its best-val epoch
  best_val_accuracy: np.ndarray  # (K,)
  best_epoch: np.ndarray      # (K,)
  history: list              # per epoch: {'epoch', 'train_loss' (K,), 'val_accuracy' (K,), ...}
  dataset: Any


def build_components(config, dataset=None):
  """``(dataset, model, tx, steps_per_epoch)`` from a config, as a single run builds them."""
  from research import data as data_lib, models, optim  # noqa: PLC0415
  dataset = data_lib.load_dataset(config.data) if dataset is None else dataset
  model = models.create_model(config.model, dataset.num_classes, dataset.image_shape)
  steps_per_epoch = len(dataset.x_train) // config.train.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"config.train.batch_size={config.train.batch_size} is larger than the "
                     f"training set ({len(dataset.x_train)} examples).")
  tx = optim.get_optimizer(config.optimizer, steps_per_epoch)
  return dataset, model, tx, steps_per_epoch


def stack_trees(trees: Sequence[Any]) -> Any:
  """``jax.tree.map(jnp.stack)`` over same-structured pytrees (the member axis first)."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _select(mask: jax.Array, new: Any, old: Any) -> Any:
  """Per member (leading axis): ``new`` where ``mask`` else ``old``."""
  def pick(a, b):
    m = mask.reshape((-1,) + (1,) * (a.ndim - 1))
    return jnp.where(m, a, b)
  return jax.tree.map(pick, new, old)


def make_vmapped_epoch(train_step: Callable, batch_size: int) -> Callable:
  """``epoch(states, x, y, perms) -> (states, mean_metrics)``: scan over steps of vmapped steps.

  ``perms`` has shape ``(K, steps, batch_size)``: member k's example indices for each step.
  """

  def epoch(states, x, y, perms):
    def body(states, idx):  # idx: (K, B)
      states, metrics = jax.vmap(train_step)(states, x[idx], y[idx])
      return states, metrics
    states, metrics = jax.lax.scan(body, states, jnp.swapaxes(perms, 0, 1))
    return states, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

  return jax.jit(epoch, donate_argnums=0)


def make_vmapped_eval(eval_step: Callable) -> Callable:
  """``f(params, batch_stats, x, y) -> {'loss': (K,), 'accuracy': (K,)}`` over stacked members."""

  def f(params, batch_stats, x, y):
    out = jax.vmap(eval_step, in_axes=(0, 0, None, None))(params, batch_stats, x, y)
    return {"loss": out["loss"], "accuracy": out["accuracy"]}

  return jax.jit(f)


def _evaluate(eval_fn, params, batch_stats, x, y, batch_size) -> dict[str, np.ndarray]:
  totals, n = {}, 0
  for start in range(0, len(x), batch_size):
    xb = jnp.asarray(x[start:start + batch_size])
    yb = jnp.asarray(y[start:start + batch_size])
    out = jax.device_get(eval_fn(params, batch_stats, xb, yb))
    for key, value in out.items():
      totals[key] = totals.get(key, 0.0) + np.asarray(value, np.float64) * len(xb)
    n += len(xb)
  return {key: value / n for key, value in totals.items()}


def train_seeds(config, seeds: Sequence[int], *, dataset=None, snapshot_dir: str | None = None,
                log: Callable[[str], None] | None = None) -> SeedsResult:
  """Trains one member per seed in one vmapped, jitted program; returns the stacked result.

  Args:
    config: an experiment config (configs/default.py schema); ``config.seed`` is ignored in
      favour of ``seeds``.
    seeds: the K seeds (K >= 1).
    dataset: a ``research.data.Dataset`` (loaded from ``config.data`` when None).
    snapshot_dir: when given, the stacked variables are saved there after every epoch
      (:class:`research.ensemble.snapshots.SnapshotWriter`; ``info['stacked'] = True``).
    log: optional ``print``-like callable for one line per epoch.

  The ``plateau`` learning-rate schedule runs one ``ReduceOnPlateau`` per member (each on its own
  validation accuracy), applied with ``research.optim.scale_learning_rate`` between epochs.
  """
  from research import optim, train  # noqa: PLC0415
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise ValueError("seeds is empty: train at least one member.")
  dataset, model, tx, steps_per_epoch = build_components(config, dataset)
  batch_size = int(config.train.batch_size)
  states = []
  for seed in seeds:
    member_cfg = config.copy_and_resolve_references()
    member_cfg.seed = seed
    states.append(train.create_train_state(member_cfg, model, tx, jax.random.PRNGKey(seed),
                                           dataset))
  state = stack_trees(states)
  del states
  epoch_fn = make_vmapped_epoch(train.make_train_step(model, tx, config), batch_size)
  eval_fn = make_vmapped_eval(train.make_eval_step(model))
  eval_batch = int(config.train.eval_batch_size)
  permutation = _epoch_permutation()
  x_train = jnp.asarray(dataset.x_train, jnp.float32)
  y_train = jnp.asarray(dataset.y_train, jnp.int32)
  n = len(dataset.x_train)
  k = len(seeds)
  best_vars = jax.tree.map(jnp.copy, {"params": state.params, "batch_stats": state.batch_stats})
  best_acc = np.full(k, -1.0)
  best_epoch = np.zeros(k, np.int64)
  writer = SnapshotWriter(snapshot_dir) if snapshot_dir else None
  # Reduce-on-plateau is host-side: one state machine per member, each fed its own val accuracy.
  plateau = optim.get_plateau(config.optimizer)
  plateau_states = [plateau.init() for _ in seeds] if plateau else None
  history = []
  try:
    for epoch in range(int(config.train.num_epochs)):
      start = time.perf_counter()
      perms = np.stack([permutation(s, epoch, n)[:steps_per_epoch * batch_size]
                        .reshape(steps_per_epoch, batch_size) for s in seeds])
      state, train_metrics = epoch_fn(state, x_train, y_train, jnp.asarray(perms))
      val = _evaluate(eval_fn, state.params, state.batch_stats, dataset.x_val, dataset.y_val,
                      eval_batch)
      improved = val["accuracy"] > best_acc
      best_vars = _select(jnp.asarray(improved),
                          {"params": state.params, "batch_stats": state.batch_stats}, best_vars)
      best_acc = np.where(improved, val["accuracy"], best_acc)
      best_epoch = np.where(improved, epoch + 1, best_epoch)
      train_metrics = jax.device_get(train_metrics)
      learning_rate = np.asarray(jax.vmap(optim.get_learning_rate)(state.opt_state))
      if plateau:
        plateau_states = [plateau.update(p, float(a))
                          for p, a in zip(plateau_states, val["accuracy"])]
        scales = jnp.asarray([p.scale for p in plateau_states], jnp.float32)
        state = state.replace(
            opt_state=jax.vmap(optim.scale_learning_rate)(state.opt_state, scales))
      row = {"epoch": epoch + 1, "learning_rate": learning_rate,
             "train_loss": np.asarray(train_metrics.get("loss", np.nan)),
             "train_accuracy": np.asarray(train_metrics.get("accuracy", np.nan)),
             "val_loss": val["loss"], "val_accuracy": val["accuracy"],
             "time": time.perf_counter() - start}
      history.append(row)
      if writer:
        writer.save(epoch + 1, {"params": state.params, "batch_stats": state.batch_stats},
                    {"epoch": epoch + 1, "stacked": True, "seeds": seeds,
                     "val_accuracy": [float(a) for a in val["accuracy"]]})
      if log:
        log(f"epoch {epoch + 1}: val acc per seed "
            + " ".join(f"{a:.4f}" for a in val["accuracy"]) + f" ({row['time']:.1f}s)")
  finally:
    if writer:
      writer.close()
  return SeedsResult(seeds=seeds, model=model, state=state, best_variables=best_vars,
                     best_val_accuracy=best_acc, best_epoch=best_epoch, history=history,
                     dataset=dataset)


def seed_members(result: SeedsResult, which: str = "best", *, recompute_bn: bool = True
                 ) -> list[Member]:
  """The K members of a :func:`train_seeds` result.

  Args:
    result: the stacked result.
    which: ``'best'`` (each member's best-val epoch), ``'final'`` (last epoch's raw parameters),
      ``'ema'`` or ``'polyak'`` (final averaged parameters; needs ``config.averaging`` on).
    recompute_bn: for averaged parameters of a batch-norm model, recompute the statistics on the
      training data (:func:`research.averaging.recompute_batch_stats`).

  Raises:
    ValueError: unknown ``which`` or an average that was off.
  """
  known = ("best", "final", "ema", "polyak")
  if which not in known:
    raise ValueError(f"which={which!r} is unknown; known: {', '.join(known)}.")
  state = result.state
  if which == "best":
    stacked = result.best_variables
  elif which == "final":
    stacked = {"params": state.params, "batch_stats": state.batch_stats}
  else:
    available = averaged_params(getattr(state, "averages", None))
    if which not in available:
      raise ValueError(f"which={which!r} but the run kept no {which} average (available: "
                       f"{sorted(available)}); set config.averaging.")
    stacked = {"params": available[which], "batch_stats": state.batch_stats}
  members = []
  for i, variables in enumerate(unstack_variables(stacked)):
    if which in ("ema", "polyak") and recompute_bn and jax.tree.leaves(variables["batch_stats"]):
      variables = dict(variables, batch_stats=recompute_batch_stats(
          result.model, variables["params"], variables["batch_stats"], result.dataset.x_train))
    info = {"seed": result.seeds[i], "source": f"seed/{which}"}
    if which == "best":
      info.update(epoch=int(result.best_epoch[i]), val_accuracy=float(result.best_val_accuracy[i]))
    members.append(Member(f"seed={result.seeds[i]} {which}", result.model, variables, info))
  return members
