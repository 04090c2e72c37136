"""Top-k members from run workdirs (a hyperparameter search's trials, or any set of runs).

A run workdir (written by ``research.train.train_and_evaluate``) holds ``metrics.jsonl`` (one JSON
object per line; the rows with ``val_accuracy`` are the per-epoch evaluations), the run's config,
and ``checkpoints/`` (latest + best by validation accuracy). The runs are ranked by their best
validation accuracy; each of the top k contributes its best checkpoint. Runs may have different
architectures: the ensemble evaluation groups equal architectures and loops over the groups.

The search feeds this with its trial workdirs: ``members_from_workdirs(trial_dirs, k)``; a search
directory (any directory whose sub-directories are run workdirs) can be expanded with
:func:`find_run_workdirs`.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Callable, NamedTuple, Sequence

import ml_collections

from research.ensemble.members import Member

CONFIG_FILES = ("config.json",)


class RankedRun(NamedTuple):
  """A run workdir with its best validation accuracy and the epoch it was reached."""
  workdir: str
  best_val_accuracy: float
  best_epoch: int


def best_val_accuracy(workdir: str) -> tuple[float, int]:
  """``(best val_accuracy, its epoch)`` from ``<workdir>/metrics.jsonl``.

  Raises:
    ValueError: when the file is missing or has no ``val_accuracy`` row.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise ValueError(f"{workdir!r} is not a run workdir: {path} does not exist.")
  best, epoch = None, -1
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      row = json.loads(line)
      acc = row.get("val_accuracy")
      if acc is not None and (best is None or float(acc) > best):
        best, epoch = float(acc), int(row.get("epoch", -1))
  if best is None:
    raise ValueError(f"{path} has no 'val_accuracy' row: the run never evaluated.")
  return best, epoch


def find_run_workdirs(paths: Sequence[str] | str) -> list[str]:
  """Expands paths, globs and search directories into run workdirs (dirs with metrics.jsonl).

  A path that is itself a run workdir is kept; a search directory (``research.search``; it has a
  ``trials/`` folder) contributes its finished trials (``research.search.top_trials``); otherwise
  its sub-directories (recursively) that are run workdirs are taken, sorted by path.
  """
  if isinstance(paths, str):
    paths = [p for p in paths.split(",") if p.strip()]
  found = []
  for pattern in paths:
    for path in sorted(glob.glob(os.path.expanduser(pattern.strip()))) or [pattern.strip()]:
      if os.path.exists(os.path.join(path, "metrics.jsonl")):
        found.append(path)
      elif os.path.isdir(os.path.join(path, "trials")):
        # A search directory: its finished trials only (not pruned or failed ones).
        from research.search import top_trials
        found.extend(top_trials(path, 10**9))
      elif os.path.isdir(path):
        for root, _, files in sorted(os.walk(path)):
          if "metrics.jsonl" in files:
            found.append(root)
  return sorted(dict.fromkeys(os.path.abspath(p) for p in found))


def rank_workdirs(paths: Sequence[str] | str) -> list[RankedRun]:
  """The run workdirs under ``paths``, best validation accuracy first (ties: path order).

  Raises:
    ValueError: when no run workdir is found (names the paths).
  """
  workdirs = find_run_workdirs(paths)
  if not workdirs:
    raise ValueError(f"no run workdir (a directory with metrics.jsonl) under {paths!r}.")
  ranked = [RankedRun(w, *best_val_accuracy(w)) for w in workdirs]
  return sorted(ranked, key=lambda r: -r.best_val_accuracy)


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (``<workdir>/config.json``).

  Raises:
    ValueError: when the workdir holds no saved config.
  """
  for name in CONFIG_FILES:
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))
  raise ValueError(f"{workdir!r} holds no saved config (looked for {', '.join(CONFIG_FILES)}); "
                   "pass config_for= to members_from_workdirs.")


def restore_best_variables(workdir: str, config, dataset=None) -> dict:
  """``{'params', 'batch_stats'}`` of the run's best checkpoint (research.train.checkpoints)."""
  from research.train import checkpoints
  restored = checkpoints.restore_best(workdir, config=config, dataset=dataset)
  return {"params": restored["params"], "batch_stats": restored["batch_stats"] or {}}


def members_from_workdirs(paths: Sequence[str] | str, k: int, *,
                          config_for: Callable[[str], ml_collections.ConfigDict] | None = None,
                          restore: Callable[[str, ml_collections.ConfigDict], dict] | None = None
                          ) -> list[Member]:
  """The top ``k`` runs under ``paths`` by best validation accuracy, each at its best checkpoint.

  Args:
    paths: run workdirs, globs, or search directories (see :func:`find_run_workdirs`).
    k: number of members (>= 1); fewer when fewer runs exist.
    config_for: ``workdir -> config`` (default :func:`load_run_config`).
    restore: ``(workdir, config) -> {'params', 'batch_stats'}`` (default
      :func:`restore_best_variables`).

  Raises:
    ValueError: ``k < 1`` or no runs found.
  """
  if int(k) < 1:
    raise ValueError(f"k={k!r} must be >= 1.")
  from research.train import build_experiment
  config_for = config_for or load_run_config
  restore = restore or restore_best_variables
  members = []
  for rank, run in enumerate(rank_workdirs(paths)[:int(k)]):
    config = config_for(run.workdir)
    experiment = build_experiment(config)
    info = {"source": "workdir", "workdir": run.workdir, "rank": rank,
            "val_accuracy": run.best_val_accuracy, "epoch": run.best_epoch}
    members.append(Member(f"top{rank + 1} {os.path.basename(run.workdir)}", experiment.model,
                          restore(run.workdir, config), info))
  return members
