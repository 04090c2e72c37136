"""K seeds trained at once: ``research.train.train_members`` over configs that differ in the seed.

The seed decides the initialization, the data order and the dropout keys of a member; member k
equals a single run with ``config.seed = seeds[k]`` up to float reassociation (the members trainer
takes the single run's step, ``jax.vmap``-ped). Each member keeps its own best validation epoch
(like the single run's best checkpoint), and per-epoch snapshots of the stacked variables can be
written for checkpoint ensembles.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np

from research.averaging import averaged_params, recompute_batch_stats
from research.ensemble.members import Member, unstack_variables
from research.ensemble.snapshots import SnapshotWriter

Params = Any


class SeedsResult(NamedTuple):
  """The outcome of :func:`train_seeds` (everything stacked along the member axis)."""
  seeds: list
  model: Any
  state: Any                 # final stacked TrainState
  best_variables: Any        # per member, {'params', 'batch_stats'} of its best-val epoch
  best_val_accuracy: np.ndarray  # (K,)
  best_epoch: np.ndarray      # (K,)
  history: list              # per member, its per-epoch records (a single run's keys)
  dataset: Any


def seed_configs(config, seeds: Sequence[int]) -> list:
  """``config`` once per seed (``config.seed`` replaced)."""
  configs = []
  for seed in seeds:
    member = config.copy_and_resolve_references()
    member.seed = int(seed)
    configs.append(member)
  return configs


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
  """
  from research.train import train_members
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise ValueError("seeds is empty: train at least one member.")
  writer = SnapshotWriter(snapshot_dir) if snapshot_dir else None

  def snapshot(epoch: int, variables: dict, info: dict) -> None:
    writer.save(epoch, variables, {**info, "stacked": True})

  try:
    result = train_members(seed_configs(config, seeds), dataset=dataset,
                           on_snapshot=snapshot if writer else None, log=log)
  finally:
    if writer:
      writer.close()
  return SeedsResult(seeds=seeds, model=result.experiment.model, state=result.state,
                     best_variables=result.best_variables,
                     best_val_accuracy=result.best_val_accuracy, best_epoch=result.best_epoch,
                     history=result.history, dataset=result.experiment.dataset)


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
