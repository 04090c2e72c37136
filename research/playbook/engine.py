"""How the claims call the project's tools: configs as overrides, the engine, a few readers.

Every variant of every claim is a config (``configs/default.py`` + overrides, :func:`config`)
trained by ``research.train.train_members`` (variants that differ only in
``research.train.members.VARYING_PATHS``) or ``research.train.train_and_evaluate``. The data set
is loaded once per process (:func:`dataset`). The stopgaps below live here because the library
has no way to do them yet (candidates for research/train and research/optim):

* :func:`train_from_state`: a ``train_and_evaluate`` run that starts from a given state instead of
  the config's initialization (zero or constant weights, claim ``zero_init``), by writing the state
  as the run's epoch-0 checkpoint and resuming from it (the engine's own resume path).
* :func:`find_cache`: the AdaGrad/RMSProp squared-gradient cache inside an optimizer state.
* :func:`evaluate_members`: loss and accuracy of K stacked members on any split (the members
  trainer evaluates on the validation split only).
* :func:`toy_paths`: a population of one update rule on a 2-D function (the toy surfaces).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import default

_CACHE_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                  "jax_persistent_cache_min_entry_size_bytes")


def enable_compilation_cache(directory: str) -> dict[str, Any]:
  """JAX's persistent compilation cache in ``directory``; returns the previous settings.

  ``research.train`` jits a new closure for every run's steps and every member group's
  initialization, so identical programs are compiled again and again (1.5-5 s each on 2 busy
  cores); the persistent cache keys on the program itself and turns the repeats into ~0.2 s loads.
  """
  from jax.experimental.compilation_cache import compilation_cache
  previous = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
  os.makedirs(directory, exist_ok=True)
  for name, value in zip(_CACHE_OPTIONS, (directory, 0.0, 0)):
    jax.config.update(name, value)
  compilation_cache.reset_cache()   # a cache initialized before (e.g. off) reads the new setting
  return previous


@contextlib.contextmanager
def compilation_cache(directory: str) -> Iterator[None]:
  """:func:`enable_compilation_cache` for the duration of a ``with`` block."""
  from jax.experimental.compilation_cache import compilation_cache as cache_lib
  previous = enable_compilation_cache(directory)
  try:
    yield
  finally:
    for name, value in previous.items():
      jax.config.update(name, value)
    cache_lib.reset_cache()


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
  except train.DivergenceError:
    return Run(read_history(workdir), "diverged", None)
  return Run(result.history, "done", result.state)


def read_history(workdir: str) -> list[dict]:
  """The epoch rows of ``<workdir>/metrics.jsonl``."""
  from research import monitor
  from research.monitor.writer import epoch_records
  return epoch_records(monitor.read_metrics(workdir))


def train_from_state(cfg: ml_collections.ConfigDict, workdir: str, state: Any, **kwargs) -> Run:
  """:func:`single`, starting from ``state`` instead of the config's initialization.

  ``state`` (a ``research.train.TrainState`` shaped like ``init_state`` of ``cfg``) is written as
  the run's epoch-0 checkpoint with its config, and ``train_and_evaluate`` resumes from it: every
  epoch is then the engine's own (checkpoints stay on, since resuming needs them).
  """
  from research.train import checkpoints, resume
  cfg = override(cfg, {"checkpoint.enabled": True})
  os.makedirs(workdir, exist_ok=True)
  resume.save_config(workdir, cfg)
  ckpts = checkpoints.Checkpoints(workdir, cfg.checkpoint.keep_latest, cfg.checkpoint.keep_best)
  try:
    # val_accuracy -1: never the best epoch; an empty loop: the run's own defaults.
    ckpts.save(0, state, {"epoch": 0, "val_accuracy": -1.0, "loop": {}}, -1.0)
  finally:
    ckpts.close()
  return single(cfg, workdir, **kwargs)


def experiment(cfg: ml_collections.ConfigDict):
  """``research.train.build_experiment(cfg)`` on the cached data set (model, rule, data)."""
  from research.train import build_experiment
  return build_experiment(cfg, dataset(cfg))


def initial_state(cfg: ml_collections.ConfigDict, seed: int | None = None):
  """``(experiment, state)``: what a run of ``cfg`` builds and starts from."""
  from research.train import build_experiment, init_state
  experiment = build_experiment(cfg, dataset(cfg))
  return experiment, init_state(experiment, seed=seed)


@functools.lru_cache(maxsize=16)
def _stacked_eval_step(model):
  from research.train import make_eval_step
  return jax.jit(jax.vmap(make_eval_step(model), in_axes=(0, 0, None, None)))


def evaluate_members(model, variables: Mapping[str, Any], x: np.ndarray, y: np.ndarray,
                     batch_size: int = 512) -> dict[str, np.ndarray]:
  """``{'loss', 'accuracy'}`` (each ``(K,)``) of K stacked members (``variables`` with a leading
  member axis, ``{'params', 'batch_stats'}``) on ``(x, y)``, in test mode."""
  from research.train import evaluate
  out = evaluate(_stacked_eval_step(model), variables["params"], variables["batch_stats"],
                 np.asarray(x), np.asarray(y), batch_size)
  return {k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in out.items()}


def find_cache(opt_state: Any) -> Any:
  """The ``cache`` pytree (squared gradients) of an AdaGrad / RMSProp optimizer state.

  Raises:
    ValueError: the state holds no such cache.
  """
  from research.optim.hyperparams import find_state
  from research.optim.rules import CacheState
  found = find_state(opt_state, CacheState)
  if found is None:
    raise ValueError("the optimizer state holds no AdaGrad/RMSProp cache.")
  return found.cache


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


def toy_paths(tx, loss_fn, start: Any, hyperparams: Mapping[str, Sequence[float]],
              steps: int) -> np.ndarray:
  """Positions ``(P, steps + 1, 2)`` of rule ``tx`` on a 2-D function from ``start`` (``(2,)``
  for every member, or ``(P, 2)``), one member per set of ``hyperparams`` values (``{name: (P,)
  values}``, written into the optimizer state: ``research.optim.init_population``), each update
  ``research.train.make_step`` (the engine's update; the Nesterov look-ahead point included)."""
  from research import optim
  from research.train import make_step
  size = len(next(iter(hyperparams.values())))
  start = jnp.broadcast_to(jnp.asarray(start, jnp.float32), (size, 2))
  states = optim.init_population(tx, start, {k: jnp.asarray(v, jnp.float32)
                                             for k, v in hyperparams.items()})
  step = jax.vmap(make_step(tx, loss_fn, full_batch=False))

  def body(carry, _):
    params, state = carry
    params, state, _, _ = step(params, state)
    return (params, state), params

  _, path = jax.jit(lambda p, s: jax.lax.scan(body, (p, s), length=steps))(start, states)
  return np.concatenate([np.asarray(start)[:, None], np.swapaxes(np.asarray(path), 0, 1)], axis=1)
