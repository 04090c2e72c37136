"""How the claims call the project's tools: configs as overrides, the engine, a few readers.

Every variant of every claim is a config (``configs/default.py`` + overrides, :func:`config`)
trained by ``research.train.train_members`` (variants that differ only in
``research.train.members.VARYING_PATHS``: :func:`sweep` runs variants x seeds as one program) or
``research.train.train_and_evaluate`` (:func:`single`). The data set is loaded once per process
(:func:`dataset`). The toy surfaces run through ``research.train.toy_paths``.
"""
from __future__ import annotations

import functools
import json
from typing import Any, Mapping, NamedTuple, Sequence

import jax
import ml_collections
import numpy as np

from configs import default


def config(overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """``configs/default.py`` for many short runs (no figures, no checkpoints, no monitoring),
  then ``overrides`` (``{"model.hidden_sizes": (64,), "optimizer.name": "sgd"}``)."""
  cfg = default.get_config()
  cfg.monitor.figures = False
  cfg.monitor.enabled = False
  cfg.checkpoint.enabled = False
  return override(cfg, overrides or {})


def override(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any]
             ) -> ml_collections.ConfigDict:
  """A copy of ``cfg`` with each dotted path of ``overrides`` set.

  Raises:
    KeyError: a path that is not a field of the schema.
  """
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  for path, value in overrides.items():
    *groups, field = path.split(".")
    node = cfg
    for group in groups:
      node = node[group]
    if field not in node:
      raise KeyError(f"config has no field {path!r}")
    node[field] = tuple(value) if isinstance(value, list) else value
  return cfg


def variants(base: ml_collections.ConfigDict, overrides: Sequence[Mapping[str, Any]]
             ) -> list[ml_collections.ConfigDict]:
  """``base`` once per override dict."""
  return [override(base, o) for o in overrides]


@functools.lru_cache(maxsize=8)
def _dataset(data_json: str):
  from research.data import load_dataset
  return load_dataset(ml_collections.ConfigDict(json.loads(data_json)))


def dataset(cfg: ml_collections.ConfigDict):
  """``research.data.load_dataset(cfg.data)``, loaded once per process per data config."""
  return _dataset(cfg.data.to_json(sort_keys=True))


def members(configs: Sequence[ml_collections.ConfigDict], **kwargs):
  """``research.train.train_members(configs)`` on the cached data set."""
  from research.train import train_members
  return train_members(configs, dataset=dataset(configs[0]), **kwargs)


class Sweep(NamedTuple):
  """A :func:`sweep`: the members program and its shape, ``seeds`` x ``size`` variants; member
  ``seed_index * size + variant`` (seed-major). Its readers give ``(seeds, size, ...)`` arrays."""
  result: Any        # research.train.MembersResult
  seeds: int
  size: int

  def split(self, values: Any) -> np.ndarray:
    """``(K, ...)``, one row per member -> ``(seeds, size, ...)``."""
    values = np.asarray(values)
    return values.reshape((self.seeds, self.size) + values.shape[1:])

  def curves(self, key: str, length: int, fill: float = np.nan) -> np.ndarray:
    """``key`` of every member's epoch records, ``(seeds, size, length)``; ``fill`` after the
    last epoch of a member that stopped (diverged)."""
    return self.split(pad([curve(h, key) for h in self.result.history], length, fill))

  def diverged(self) -> np.ndarray:
    """``(seeds, size)`` booleans: the member was stopped for divergence."""
    return self.split([e is not None for e in self.result.errors])

  def best_val(self, unfinished: float) -> np.ndarray:
    """``(seeds, size)`` best validation accuracies; ``unfinished`` for a member stopped before
    its first epoch ended (the trainer's -1)."""
    best = np.asarray(self.result.best_val_accuracy, np.float64)
    return self.split(np.where(best < 0, unfinished, best))


def sweep(base: ml_collections.ConfigDict, overrides: Sequence[Mapping[str, Any]], seeds: int,
          **kwargs) -> Sweep:
  """Every variant (``base`` + one of ``overrides``) at seeds ``0 .. seeds - 1``, trained as ONE
  ``train_members`` program (:func:`members`; ``kwargs`` go to it)."""
  configs = [override(base, {**o, "seed": seed}) for seed in range(seeds) for o in overrides]
  return Sweep(members(configs, **kwargs), int(seeds), len(overrides))


class Run(NamedTuple):
  """A finished ``train_and_evaluate``: its epoch records, ``"done"`` or ``"diverged"``, and the
  final state (None when it diverged)."""
  history: list
  status: str
  state: Any


def single(cfg: ml_collections.ConfigDict, workdir: str, **kwargs) -> Run:
  """``research.train.train_and_evaluate(cfg, workdir)`` on the cached data set, silent.

  A diverged run is returned with the history up to its last good epoch (the batch losses of the
  diverged epoch are in ``metrics.jsonl``).
  """
  from research import train
  try:
    result = train.train_and_evaluate(cfg, workdir, dataset=dataset(cfg), log=None, **kwargs)
  except train.DivergenceError:   # (on every process, once process 0 has written the records)
    return Run(read_history(workdir), "diverged", None)
  return Run(result.history, "done", result.state)


def read_history(workdir: str) -> list[dict]:
  """The epoch rows of ``<workdir>/metrics.jsonl``."""
  from research import monitor
  from research.monitor.writer import epoch_records
  return epoch_records(monitor.read_metrics(workdir))


def experiment(cfg: ml_collections.ConfigDict):
  """``research.train.build_experiment(cfg)`` on the cached data set (model, rule, data)."""
  from research.train import build_experiment
  return build_experiment(cfg, dataset(cfg))


def initial_state(cfg: ml_collections.ConfigDict, seed: int | None = None):
  """``(experiment, state)``: what a run of ``cfg`` builds and starts from."""
  from research.train import build_experiment, init_state
  experiment = build_experiment(cfg, dataset(cfg))
  return experiment, init_state(experiment, seed=seed)


def kernels(params: Any) -> dict[str, Any]:
  """``{'Dense_0': kernel, ...}``: the weight matrices of a params tree (biases left out)."""
  return {"/".join(str(getattr(k, "key", k)) for k in path[:-1]): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)
          if getattr(path[-1], "key", None) == "kernel"}


def to_numpy(tree: Any) -> Any:
  """Every leaf as a float64 numpy array."""
  return jax.tree.map(lambda a: np.asarray(jax.device_get(a), np.float64), tree)


def curve(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
  """``key`` per epoch of a history (NaN where an epoch lacks it)."""
  return np.array([float(r.get(key, np.nan)) for r in history], np.float64)


def pad(rows: Sequence[Sequence[float]], length: int, value: float = np.nan) -> np.ndarray:
  """Rows of different lengths (members that stopped early) as one ``(len(rows), length)``."""
  out = np.full((len(rows), length), value, np.float64)
  for i, row in enumerate(rows):
    row = np.asarray(row, np.float64)[:length]
    out[i, :row.size] = row
  return out
