"""The shared store: Optuna studies that the master and every worker open by URL.

Storage (``config.search.storage``):

* ``""`` (default): a SQLite file ``<search_dir>/study.db`` (embedded, no server; fine for the
  workers of one machine and for a shared filesystem with few writers);
* any SQLAlchemy URL, e.g. ``postgresql://user:pw@host/db`` (many machines);
* ``journal:<path>`` (or a path ending in ``.log`` / ``.journal``): Optuna's append-only journal
  file, for clusters with a shared filesystem and no database.

Layout of a search named ``N`` in the store:

* study ``N``: the search itself; user attributes ``config`` (the base experiment config as JSON),
  ``search_dir``, ``num_stages``, ``finished`` (set by the master when the last stage is done).
* study ``N/stage<s>``: the trials of stage ``s`` (maximize validation accuracy); user attributes
  ``space`` (the stage's ranges), ``num_epochs``, ``enqueued``.

Our sampling is done up front: the master draws each stage's points (``space.sample``) and
ENQUEUES them; workers pop waiting trials. Optuna guarantees that a waiting trial goes to one
worker only (``set_trial_state_values(WAITING -> RUNNING)`` succeeds once), so no two workers run
the same trial, and a trial is never created beyond the stage's budget.

Liveness: a worker stamps its RUNNING trial with ``worker`` (``host:pid``) and refreshes a
``heartbeat`` time; :func:`fail_dead_trials` marks FAILED the trials of workers that are gone (same
host and the pid is dead, or the heartbeat is older than the grace period), so killing a worker
loses at most its trial.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

#: Optuna's own INFO line per trial would drown the master's report.
optuna.logging.set_verbosity(optuna.logging.WARNING)

DB_FILE = "study.db"
SQLITE_TIMEOUT_S = 120  # concurrent SQLite writers wait for the lock instead of failing


def storage_url(spec: str, search_dir: str) -> str:
  """The canonical URL of ``config.search.storage`` (see module doc); absolute paths."""
  spec = (spec or "").strip()
  if not spec:
    return "sqlite:///" + os.path.abspath(os.path.join(search_dir, DB_FILE))
  if spec.startswith("journal:"):
    return "journal:" + os.path.abspath(spec[len("journal:"):])
  if spec.endswith((".log", ".journal")) and "://" not in spec:
    return "journal:" + os.path.abspath(spec)
  if "://" not in spec:
    raise ValueError(f"storage={spec!r} is neither '' (SQLite file in the search dir), a "
                     "SQLAlchemy URL (sqlite:///path.db, postgresql://...) nor journal:<path>.")
  return spec


def open_storage(url: str) -> optuna.storages.BaseStorage:
  """An Optuna storage for a URL from :func:`storage_url`."""
  if url.startswith("journal:"):
    from optuna.storages.journal import JournalFileBackend  # noqa: PLC0415
    path = url[len("journal:"):]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(path))
  if url.startswith("sqlite:///"):
    os.makedirs(os.path.dirname(url[len("sqlite:///"):]) or ".", exist_ok=True)
    return optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
  return optuna.storages.RDBStorage(url)


def stage_study_name(search_name: str, stage: int) -> str:
  return f"{search_name}/stage{int(stage)}"


def create_or_load(storage: optuna.storages.BaseStorage, name: str,
                   pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
  """The study ``name`` (maximize), created if absent."""
  return optuna.create_study(storage=storage, study_name=name, direction="maximize",
                             load_if_exists=True, pruner=pruner)


def load(storage: optuna.storages.BaseStorage, name: str,
         pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study | None:
  """The study ``name``, or None when the store has no such study."""
  if name not in optuna.get_all_study_names(storage):
    return None
  return optuna.load_study(study_name=name, storage=storage, pruner=pruner)


def make_pruner(search_cfg) -> optuna.pruners.BasePruner:
  """``config.search.pruner``: ``median`` (stop a trial whose epoch-``t`` validation accuracy is
  below the median of earlier trials at ``t``, after ``pruner_startup_trials`` trials), ``successive_halving`` (keep the top
  ``1/reduction_factor`` at rungs 1, 4, 16, ... epochs) or ``none``."""
  name = search_cfg.get("pruner", "median")
  # The warm-up (``pruner_warmup_epochs``: epochs never pruned) is applied by the worker, which
  # also never prunes after a trial's last epoch.
  if name == "median":
    return optuna.pruners.MedianPruner(
        n_startup_trials=int(search_cfg.get("pruner_startup_trials", 4)))
  if name == "successive_halving":
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=int(search_cfg.get("reduction_factor", 4)))
  if name == "none":
    return optuna.pruners.NopPruner()
  raise ValueError(f"config.search.pruner={name!r} is unknown; known: median, "
                   "successive_halving, none.")


def worker_id() -> str:
  """``host:pid`` of this process (stamped on the trials it runs)."""
  return f"{socket.gethostname()}:{os.getpid()}"


def enqueue(study: optuna.Study, points: list[dict[str, float]], user_attrs: list[dict[str, Any]]
            ) -> None:
  """Adds waiting trials with fixed hyperparameters (each with its user attributes)."""
  for point, attrs in zip(points, user_attrs):
    study.enqueue_trial(point, user_attrs=attrs)


def _study_id(study: optuna.Study) -> int:
  return study._storage.get_study_id_from_name(study.study_name)


def pop_trial(study: optuna.Study) -> optuna.trial.Trial | None:
  """Claims one WAITING trial of ``study`` for this process (None when none is left).

  The WAITING -> RUNNING transition succeeds for exactly one caller across processes, so
  concurrent workers never get the same trial.
  """
  storage = study._storage
  for frozen in storage.get_all_trials(_study_id(study), deepcopy=False,
                                       states=(TrialState.WAITING,)):
    try:
      if not storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
        continue
    except optuna.exceptions.UpdateFinishedTrialError:
      continue
    trial = optuna.trial.Trial(study, frozen._trial_id)
    trial.set_user_attr("worker", worker_id())
    trial.set_user_attr("heartbeat", time.time())
    return trial
  return None


def pid_alive(pid: int) -> bool:
  """Whether a process with this pid exists on this host (zombies count as dead)."""
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:  # a killed child that was not reaped yet is a zombie: dead for our purpose
    with open(f"/proc/{int(pid)}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"
  except OSError:
    return True


def is_dead(trial: optuna.trial.FrozenTrial, *, grace_s: float, now: float | None = None,
            host: str | None = None) -> str | None:
  """Why a RUNNING trial's worker is gone, or None while it seems alive."""
  worker = trial.user_attrs.get("worker", "")
  heartbeat = trial.user_attrs.get("heartbeat")
  now = time.time() if now is None else now
  host = socket.gethostname() if host is None else host
  worker_host, _, pid = worker.rpartition(":")
  if worker_host == host and pid.isdigit() and not pid_alive(int(pid)):
    return f"worker {worker} exited"
  if heartbeat is not None and now - float(heartbeat) > grace_s:
    return f"no heartbeat from worker {worker} for {now - float(heartbeat):.0f}s"
  return None


def fail_dead_trials(study: optuna.Study, *, grace_s: float = 300.0,
                     log: Callable[[str], None] | None = None) -> list[int]:
  """Marks FAILED the RUNNING trials whose worker is gone; returns their numbers."""
  storage = study._storage
  failed = []
  for frozen in storage.get_all_trials(_study_id(study), deepcopy=False,
                                       states=(TrialState.RUNNING,)):
    reason = is_dead(frozen, grace_s=grace_s)
    if reason is None:
      continue
    try:
      storage.set_trial_user_attr(frozen._trial_id, "fail_reason", reason)
      storage.set_trial_state_values(frozen._trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
      continue  # it finished meanwhile
    failed.append(frozen.number)
    if log:
      log(f"[master] {study.study_name} trial {frozen.number} marked FAILED: {reason}")
  return failed


def set_json_attr(study: optuna.Study, key: str, value: Any) -> None:
  study.set_user_attr(key, json.loads(json.dumps(value)))


def counts(study: optuna.Study) -> dict[str, int]:
  """Number of trials per state name (``WAITING``, ``RUNNING``, ``COMPLETE``, ``PRUNED``, ``FAIL``)."""
  out = {state.name: 0 for state in TrialState}
  for trial in study.get_trials(deepcopy=False):
    out[trial.state.name] += 1
  return out
