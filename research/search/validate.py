"""Every value of ``config.search`` checked in one place, before anything runs or is written.

``validate_search_config(config, search_dir)`` is what ``scripts/search.py`` (the master) calls on
its config and ``scripts/search_worker.py`` calls on the config the master stored; it raises
``ValueError`` with one line naming the first bad value and what is allowed, and returns the
:class:`SearchPlan` (stages, space, store URL) the master then runs. It writes nothing and starts
nothing (the trainer's module is imported to check that it exists).

:data:`DEFAULTS` holds the value of every optional field; ``search_value(search_cfg, key)`` reads
a field with its default.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from research.search import stages as stages_lib
from research.search import study as study_lib
from research.search import trials as trials_lib
from research.search.space import METHODS, Space

#: Optional fields of ``config.search`` and their defaults.
DEFAULTS: dict[str, Any] = {
    "storage": "", "method": "random", "seed": 0, "top_k": 3, "pad": 0.1,
    "border_fraction": 0.1, "pruner": "median", "pruner_startup_trials": 4,
    "pruner_warmup_epochs": 1, "reduction_factor": 4, "num_workers": 2, "population": 1,
    "trainer": "research.train:train_and_evaluate", "heartbeat_s": 10.0, "grace_s": 300.0,
    "pid_check": True, "max_retries": 1, "max_worker_restarts": 2, "report_top_k": 5,
}
#: Fields every search config must have.
REQUIRED = ("name", "space", "stage_epochs", "stage_trials")


class SearchPlan(NamedTuple):
  """What a valid ``config.search`` describes."""
  name: str
  stages: list[stages_lib.Stage]
  space: Space
  storage_url: str


def search_value(search_cfg: Any, key: str) -> Any:
  """``config.search.<key>``, or its default (:data:`DEFAULTS`)."""
  return search_cfg.get(key, DEFAULTS[key])


def _integer(search_cfg: Any, key: str, low: int) -> int:
  value = search_value(search_cfg, key)
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"config.search.{key}={value!r} must be an integer >= {low}")
  return value


def _number(search_cfg: Any, key: str, low: float, high: float = math.inf, *,
            low_open: bool = False, high_open: bool = False) -> float:
  value = search_value(search_cfg, key)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ValueError(f"config.search.{key}={value!r} must be a finite number")
  too_low = value <= low if low_open else value < low
  too_high = value >= high if high_open else value > high
  if too_low or too_high:
    interval = (("(" if low_open else "[") + f"{low:g}, {high:g}" + (")" if high_open else "]")
                if math.isfinite(high) else (">" if low_open else ">=") + f" {low:g}")
    raise ValueError(f"config.search.{key}={value!r} must be "
                     + (f"in {interval}" if math.isfinite(high) else interval))
  return float(value)


def _choice(search_cfg: Any, key: str, choices: tuple[str, ...]) -> str:
  value = search_value(search_cfg, key)
  if value not in choices:
    raise ValueError(f"config.search.{key}={value!r} is unknown; known: {', '.join(choices)}")
  return value


def _int_tuple(search_cfg: Any, key: str) -> tuple[int, ...]:
  value = search_cfg[key]
  items = value if isinstance(value, (tuple, list)) else None
  if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items):
    raise ValueError(f"config.search.{key}={value!r} must be a non-empty tuple of integers >= 1, "
                     "one per stage")
  return tuple(items)


def _check_trial_configs(config: Any, space: Space, stages: list[stages_lib.Stage],
                         trainer: str) -> None:
  """With the default trainer: the trial configs with every searched value at the low (high) end
  of its range pass the trainer's checks (``research.train.validate_config``, the optimizer's)."""
  if trainer != DEFAULTS["trainer"]:
    return
  paths = {p.name: p.path for p in space.params}
  corners = [{p.name: getattr(p, end) for p in space.params} for end in ("low", "high")]
  configs = [trials_lib.trial_config(config, paths, corner, num_epochs=stages[0].num_epochs,
                                     seed=0) for corner in corners]
  from research import optim, train
  for corner, trial in zip(("low", "high"), configs):
    try:
      train.validate_config(trial)
      optim.get_optimizer(trial.optimizer, 1)
    except ValueError as err:
      raise ValueError(f"the trial config with every searched value at its {corner!r} end is "
                       f"invalid: {err}") from None


def validate_search_config(config: Any, search_dir: str | None = None, *,
                           storage_url: str | None = None) -> SearchPlan:
  """Checks every field of ``config.search`` (module doc); returns the :class:`SearchPlan`.

  Args:
    config: the search's experiment config (``configs/search_digits.py`` schema).
    search_dir: the search directory (where the default SQLite store lives).
    storage_url: a worker's ``--storage``: the store is this URL and must already exist (a
      worker never creates one); default: ``config.search.storage``, which the master may create.

  Raises:
    ValueError: the first bad value, in one line naming it and what is allowed.
  """
  if not hasattr(config, "keys") or "search" not in config or not hasattr(config.search, "keys"):
    raise ValueError("the config has no 'search' group; a search config looks like "
                     "configs/search_digits.py")
  search_cfg = config.search
  missing = [key for key in REQUIRED if key not in search_cfg]
  if missing:
    raise ValueError(f"config.search lacks {', '.join(missing)}; see configs/search_digits.py")
  unknown = sorted(set(search_cfg.keys()) - set(REQUIRED) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"config.search has no field {unknown[0]!r}; its fields: "
                     f"{', '.join(sorted(set(REQUIRED) | set(DEFAULTS)))}")
  name = search_cfg.name
  if not isinstance(name, str) or not name.strip() or "/" in name:
    raise ValueError(f"config.search.name={name!r} must be a non-empty name without '/'")
  storage = search_value(search_cfg, "storage")
  if not isinstance(storage, str):
    raise ValueError(f"config.search.storage={storage!r} must be a string: '' (SQLite file in "
                     "the search dir), a SQLAlchemy URL or journal:<path>")
  if storage_url is None:
    if not storage.strip() and search_dir is None:
      raise ValueError("config.search.storage='' keeps the store in the search dir, but no "
                       "search dir was given")
    url = study_lib.storage_url(storage, search_dir or ".")
    study_lib.check_storage_url(url, must_exist=False)
  else:
    url = storage_url
    study_lib.check_storage_url(url, must_exist=True)
  _choice(search_cfg, "method", METHODS)
  _integer(search_cfg, "seed", 0)
  space_cfg = search_cfg.space
  if not hasattr(space_cfg, "keys"):
    raise ValueError(f"config.search.space={space_cfg!r} must be a group of "
                     "{name: {path, low, high, scale}}")
  space = Space.from_dict(space_cfg.to_dict() if hasattr(space_cfg, "to_dict") else space_cfg)
  epochs, trials = _int_tuple(search_cfg, "stage_epochs"), _int_tuple(search_cfg, "stage_trials")
  if len(epochs) != len(trials):
    raise ValueError(f"config.search.stage_epochs={epochs} and stage_trials={trials} must have "
                     "the same length (one entry per stage)")
  stages = stages_lib.stages_from_config(search_cfg)
  _integer(search_cfg, "top_k", 1)
  _number(search_cfg, "pad", 0.0, 0.5, low_open=True)
  _number(search_cfg, "border_fraction", 0.0, 0.5, low_open=True, high_open=True)
  _choice(search_cfg, "pruner", study_lib.PRUNERS)
  _integer(search_cfg, "pruner_startup_trials", 0)
  _integer(search_cfg, "pruner_warmup_epochs", 0)
  _integer(search_cfg, "reduction_factor", 2)
  _integer(search_cfg, "num_workers", 0)
  population = _integer(search_cfg, "population", 1)
  _integer(search_cfg, "max_retries", 0)
  _integer(search_cfg, "max_worker_restarts", 0)
  _integer(search_cfg, "report_top_k", 1)
  heartbeat_s = _number(search_cfg, "heartbeat_s", 0.0, low_open=True)
  grace_s = _number(search_cfg, "grace_s", 0.0, low_open=True)
  if grace_s < 2 * heartbeat_s:
    raise ValueError(f"config.search.grace_s={grace_s:g} must be >= 2 x heartbeat_s="
                     f"{heartbeat_s:g} (a trial is failed after grace_s without a heartbeat)")
  if not isinstance(search_value(search_cfg, "pid_check"), bool):
    raise ValueError(f"config.search.pid_check={search_value(search_cfg, 'pid_check')!r} must "
                     "be True or False")
  if population > 1:
    from research.search.population import VARYING_PATHS
    for param in space.params:
      if param.path not in VARYING_PATHS:
        raise ValueError(f"config.search.population={population} trains trials that differ only "
                         f"in {', '.join(VARYING_PATHS)}; the space's {param.name!r} sets "
                         f"{param.path!r} (use population=1)")
  for param in space.params:  # every path names a field of the config (cheap: before imports)
    trials_lib.trial_config(config, {param.name: param.path}, {param.name: param.low},
                            num_epochs=stages[0].num_epochs, seed=0)
  trainer = search_value(search_cfg, "trainer")
  if not isinstance(trainer, str):
    raise ValueError(f"config.search.trainer={trainer!r} must be 'package.module:function'")
  from research.search.worker import resolve_trainer
  resolve_trainer(trainer)
  _check_trial_configs(config, space, stages, trainer)
  return SearchPlan(name, stages, space, url)
