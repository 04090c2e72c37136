"""One trial on disk: its config, its workdir and the name that ranks it.

A trial trains in ``<search_dir>/trials/running_s<stage>_t<number>``; when it ends the folder is
renamed after its outcome, with the validation accuracy first so that ``ls trials | sort`` ranks
the finished trials (best last; ``sort -r`` for best first)::

    acc0.9712_s2_t0003          finished (best validation accuracy over its epochs)
    pruned_acc0.8123_s1_t0007   stopped by the pruner (accuracy when it was stopped)
    fail_s0_t0011               diverged or crashed, or its worker died (reason in trial.json)

A folder still named ``running_...`` belongs to a running trial: when the master fails the trial
of a dead worker it renames the folder (:func:`mark_failed`), and the retry gets a folder of its
own (a new trial number).

Each trial folder holds ``trial.json`` (stage, number, hyperparameters, seed, outcome, per-epoch
history), ``config.json`` (the full experiment config) and whatever the trainer writes
(``metrics.jsonl``, checkpoints, TensorBoard events).
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import ml_collections

TRIALS_DIR = "trials"
TRIAL_FILE = "trial.json"
CONFIG_FILE = "config.json"


def trial_tag(stage: int, number: int) -> str:
  return f"s{int(stage)}_t{int(number):04d}"


def running_dir(search_dir: str, stage: int, number: int) -> str:
  return os.path.join(search_dir, TRIALS_DIR, f"running_{trial_tag(stage, number)}")


def final_name(state: str, stage: int, number: int, accuracy: float | None) -> str:
  """The folder name of a finished trial (see module doc)."""
  tag = trial_tag(stage, number)
  if state == "COMPLETE":
    return f"acc{accuracy:.4f}_{tag}"
  if state == "PRUNED" and accuracy is not None:
    return f"pruned_acc{accuracy:.4f}_{tag}"
  return f"{state.lower()}_{tag}"


def finalize_dir(workdir: str, name: str) -> str:
  """Renames a trial folder to ``name`` (same parent); returns the new path."""
  target = os.path.join(os.path.dirname(workdir), name)
  if os.path.abspath(target) == os.path.abspath(workdir):
    return workdir
  if os.path.exists(target):  # a folder of an earlier attempt: keep both
    suffix = 1
    while os.path.exists(f"{target}.{suffix}"):
      suffix += 1
    target = f"{target}.{suffix}"
  os.rename(workdir, target)
  return target


def parse_running_name(name: str) -> tuple[int, int] | None:
  """``(stage, number)`` of a ``running_s<stage>_t<number>`` folder name, else None."""
  if not name.startswith("running_s") or "_t" not in name:
    return None
  stage, _, number = name[len("running_s"):].partition("_t")
  return (int(stage), int(number)) if stage.isdigit() and number.isdigit() else None


def mark_failed(search_dir: str, stage: int, number: int, reason: str) -> str | None:
  """Renames the folder of a trial whose worker died (``running_...`` -> ``fail_...``) and records
  the outcome in its ``trial.json``; returns the new path (None when the folder is absent)."""
  workdir = running_dir(search_dir, stage, number)
  if not os.path.isdir(workdir):
    return None
  info: dict[str, Any] = {"stage": int(stage), "number": int(number)}
  try:
    with open(os.path.join(workdir, TRIAL_FILE)) as f:
      info.update(json.load(f))
  except (OSError, ValueError):  # killed before (or while) writing it: the folder still goes
    pass
  info.update(state="FAIL", fail_reason=reason)
  write_json(os.path.join(workdir, TRIAL_FILE), info)
  return finalize_dir(workdir, final_name("FAIL", stage, number, None))


def set_path(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
  """``config.<path> = value`` for a dotted path.

  Raises:
    ValueError: when the path does not name an existing field (names the missing part).
  """
  node = config
  parts = path.split(".")
  for i, part in enumerate(parts):
    if part not in node:
      raise ValueError(f"search space path {path!r}: config has no field "
                       f"{'.'.join(parts[:i + 1])!r}.")
    if i < len(parts) - 1:
      node = node[part]
  # float fields stay float (a sampled 1 must not turn learning_rate into an int field)
  node[parts[-1]] = float(value) if isinstance(node[parts[-1]], float) else value


def trial_config(base: ml_collections.ConfigDict, paths: Mapping[str, str],
                 params: Mapping[str, float], *, num_epochs: int, seed: int
                 ) -> ml_collections.ConfigDict:
  """The experiment config of one trial: ``base`` with the sampled values, epochs and seed set."""
  config = ml_collections.ConfigDict(base.to_dict())
  for name, value in params.items():
    set_path(config, paths[name], value)
  config.train.num_epochs = int(num_epochs)
  config.seed = int(seed)
  return config


def write_json(path: str, payload: Mapping[str, Any]) -> None:
  """Writes JSON atomically (temp file + rename): a killed worker never leaves half a file."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=1, default=_jsonable)
  os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
  try:
    import numpy as np
    if isinstance(value, np.ndarray):
      return value.tolist()
    if isinstance(value, np.generic):
      return value.item()
  except ImportError:  # pragma: no cover
    pass
  return str(value)


def config_to_json(config: ml_collections.ConfigDict) -> dict:
  """A JSON-able dict of a config (tuples become lists)."""
  return json.loads(json.dumps(config.to_dict(), default=_jsonable))
