"""The worker: keeps taking a waiting trial from the shared study, trains it, reports every epoch.

Loop (``serve``): find the earliest stage with a WAITING trial, claim it (``study.pop_trial``:
one worker per trial), build its config (the search's base config + the trial's hyperparameters,
the stage's epochs, the trial's seed), train it with ``config.search.trainer`` (default
``research.train:train_and_evaluate``) and after every epoch

* ``trial.report(val_accuracy, epoch)``, then ``trial.should_prune()``: True stops the run
  (the trainer's ``on_epoch_end`` returns True) and the trial ends PRUNED;

at the end the trial is told COMPLETE with its best validation accuracy, or FAILED when the
trainer raised (``DivergenceError``: NaN/Inf or exploding loss; any other error, whose message
goes to ``trial.json`` and the trial's ``fail_reason``). The worker then moves on. Its folder is
renamed after the outcome (``trials.py``), so ``ls trials | sort`` ranks the trials.

With ``population=P > 1`` the worker claims up to P trials of one stage at once and trains them
as one vmapped program (``population.py``).

The claim is atomic on every store (``study.pop_trial``). A background thread records a
heartbeat of the running trials every ``heartbeat_s`` so the master can tell a dead worker on
another machine (``study.fail_dead_trials``); a worker that finds its trial failed meanwhile (its
heartbeats stopped reaching the store for ``grace_s``) drops the result (``LOST``). The worker
checks the store, the search and the search's stored config first (``open_search``: one
``ValueError`` line), and exits when the master marks the search finished, or after
``idle_timeout_s`` with nothing to do.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import threading
import time
import traceback
from typing import Any, Callable, Sequence

import ml_collections
import optuna

from research.search import study as study_lib
from research.search import trials as trials_lib
from research.search.space import Space
from research.search.validate import DEFAULTS, search_value, validate_search_config

DEFAULT_TRAINER = DEFAULTS["trainer"]

Log = Callable[[str], None]


def resolve_trainer(spec: str) -> Callable[..., Any]:
  """``"package.module:function"`` -> the function (the trainer a search uses).

  Raises:
    ValueError: malformed spec, or no such module / function.
  """
  module_name, _, function_name = (spec or DEFAULT_TRAINER).partition(":")
  if not module_name or not function_name:
    raise ValueError(f"config.search.trainer={spec!r} must be 'package.module:function', e.g. "
                     f"{DEFAULT_TRAINER!r}.")
  try:
    return getattr(importlib.import_module(module_name), function_name)
  except (ImportError, AttributeError) as err:
    raise ValueError(f"config.search.trainer={spec!r} cannot be loaded: {err}") from err


class Heartbeat:
  """Context manager: a daemon thread recording a heartbeat of the running trials every
  ``interval_s`` (``study.record_heartbeat``: Optuna's on SQL stores, a user attribute on the
  journal)."""

  def __init__(self, storage: optuna.storages.BaseStorage, trial_ids: Sequence[int],
               interval_s: float):
    self._storage, self._ids, self._interval = storage, list(trial_ids), float(interval_s)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True, name="search-heartbeat")

  def _run(self) -> None:
    while not self._stop.wait(self._interval):
      for trial_id in self._ids:
        try:
          study_lib.record_heartbeat(self._storage, trial_id)
        except Exception:  # noqa: BLE001 (finished meanwhile, or the store is busy: next beat)
          pass

  def __enter__(self) -> "Heartbeat":
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join(timeout=5)


class Claimed:
  """A claimed trial with everything needed to train and record it."""

  def __init__(self, study: optuna.Study, trial: optuna.trial.Trial, stage: int,
               base_config: ml_collections.ConfigDict, search_dir: str):
    self.study, self.trial, self.stage = study, trial, stage
    space = Space.from_dict(study.user_attrs["space"])
    # suggest_* returns the enqueued value (recorded with its distribution by the claim on SQL
    # stores; recorded here on the journal store).
    self.params = {p.name: trial.suggest_float(p.name, p.low, p.high, log=p.scale == "log")
                   for p in space.params}
    self.seed = int(trial.user_attrs.get("seed", base_config.seed))
    self.num_epochs = int(study.user_attrs["num_epochs"])
    self.config = trials_lib.trial_config(
        base_config, {p.name: p.path for p in space.params}, self.params,
        num_epochs=self.num_epochs, seed=self.seed)
    self.workdir = trials_lib.running_dir(search_dir, stage, trial.number)
    self.warmup = int(search_value(base_config.search, "pruner_warmup_epochs"))
    self.history: list[dict] = []
    self.pruned = False
    self.start = time.time()

  @property
  def number(self) -> int:
    return self.trial.number

  def record(self) -> dict[str, Any]:
    return {"study": self.study.study_name, "stage": self.stage, "number": self.number,
            "params": self.params, "seed": self.seed, "num_epochs": self.num_epochs,
            "worker": study_lib.worker_id()}

  def prepare(self) -> None:
    """Creates the folder with config.json (as the training loop writes it) and trial.json."""
    os.makedirs(self.workdir, exist_ok=True)
    trials_lib.write_json(os.path.join(self.workdir, trials_lib.CONFIG_FILE),
                          json.loads(self.config.to_json()))
    trials_lib.write_json(os.path.join(self.workdir, trials_lib.TRIAL_FILE),
                          {**self.record(), "state": "RUNNING"})

  def on_epoch(self, epoch: int, record: dict) -> bool:
    """Reports one epoch to the study; True when the pruner says stop."""
    self.history.append(dict(record))
    accuracy = record.get("val_accuracy")
    if accuracy is None or not math.isfinite(float(accuracy)):
      return False
    step = int(record.get("epoch", epoch + 1))
    self.trial.report(float(accuracy), step)
    # No pruning during the warm-up epochs, nor after the last epoch (the trial is done anyway:
    # pruning it then would only drop a finished trial from the ranking).
    if self.warmup < step < self.num_epochs and self.trial.should_prune():
      self.pruned = True
      return True
    return False

  def best(self) -> tuple[float | None, int | None]:
    rows = [r for r in self.history if r.get("val_accuracy") is not None
            and math.isfinite(float(r["val_accuracy"]))]
    if not rows:
      return None, None
    row = max(rows, key=lambda r: float(r["val_accuracy"]))
    return float(row["val_accuracy"]), int(row.get("epoch", 0))

  def lost(self) -> bool:
    """Whether the trial was finished by someone else: the master fails the trial of a worker
    whose heartbeats stopped reaching the store (and renames its folder)."""
    return self.study._storage.get_trial(self.trial._trial_id).state.is_finished()

  def finish(self, *, error: BaseException | None = None, log: Log | None = None) -> str:
    """Tells the study the outcome, renames the folder, writes trial.json; returns the state
    (``LOST`` when the master failed the trial meanwhile: nothing is written then)."""
    accuracy, epoch = self.best()
    if error is not None:
      state = "FAIL"
      kind = ("diverged" if type(error).__name__ in ("DivergenceError", "PopulationDivergence")
              else type(error).__name__)
      reason = f"{kind}: {error}"
    elif self.pruned:
      state, reason = "PRUNED", None
    elif accuracy is None:
      state, reason = "FAIL", "no finite validation accuracy was reported"
    else:
      state, reason = "COMPLETE", None
    if self.lost():
      if log:
        log(f"[worker {study_lib.worker_id()}] stage {self.stage} trial {self.number}: the master "
            "failed it meanwhile (no heartbeat in time); its result is dropped")
      return "LOST"
    name = trials_lib.final_name(state, self.stage, self.number, accuracy)
    payload = {**self.record(), "state": state, "best_val_accuracy": accuracy,
               "best_epoch": epoch, "epochs_run": len(self.history),
               "time_s": time.time() - self.start, "fail_reason": reason,
               "history": self.history}
    try:
      trials_lib.write_json(os.path.join(self.workdir, trials_lib.TRIAL_FILE), payload)
      self.workdir = trials_lib.finalize_dir(self.workdir, name)
      self.trial.set_user_attr("workdir", os.path.basename(self.workdir))
      if reason:
        self.trial.set_user_attr("fail_reason", reason[:2000])
      if accuracy is not None:
        self.trial.set_user_attr("best_epoch", epoch)
      if state == "COMPLETE":
        self.study.tell(self.trial, accuracy, skip_if_finished=True)
      else:
        self.study.tell(self.trial, state=getattr(optuna.trial.TrialState, state),
                        skip_if_finished=True)
    except (FileNotFoundError, optuna.exceptions.UpdateFinishedTrialError):
      if not self.lost():  # not the race with the master below: a real error
        raise
      if log:
        log(f"[worker {study_lib.worker_id()}] stage {self.stage} trial {self.number}: the master "
            "failed it meanwhile (no heartbeat in time); its result is dropped")
      return "LOST"
    if log:
      acc = "-" if accuracy is None else f"{accuracy:.4f}"
      log(f"[worker {study_lib.worker_id()}] stage {self.stage} trial {self.number}: {state} "
          f"val_acc={acc} ({len(self.history)} epochs, {time.time() - self.start:.1f}s)"
          + (f" {reason}" if reason else ""))
    return state


def run_single(claimed: Claimed, train_fn: Callable[..., Any], log: Log | None = None) -> str:
  """Trains one claimed trial with ``train_fn(config, workdir, on_epoch_end=...)``."""
  claimed.prepare()
  try:
    train_fn(claimed.config, claimed.workdir, on_epoch_end=claimed.on_epoch)
  except Exception as err:  # noqa: BLE001 (a failed trial must not stop the worker)
    if log and type(err).__name__ != "DivergenceError":
      log(traceback.format_exc(limit=4))
    return claimed.finish(error=err, log=log)
  return claimed.finish(log=log)


def run_population(claimed: Sequence[Claimed], log: Log | None = None) -> list[str]:
  """Trains claimed trials of one stage as one vmapped population (``population.py``)."""
  from research.search import population
  for c in claimed:
    c.prepare()

  def on_epoch_end(epoch: int, records: Sequence[dict | None]) -> list[bool]:
    return [r is None or c.pruned or c.on_epoch(epoch, r) for c, r in zip(claimed, records)]

  try:
    result = population.train_population([c.config for c in claimed],
                                         [c.workdir for c in claimed], on_epoch_end=on_epoch_end)
  except Exception as err:  # noqa: BLE001
    if log:
      log(traceback.format_exc(limit=4))
    return [c.finish(error=err, log=log) for c in claimed]
  return [c.finish(error=None if e is None else PopulationDivergence(e), log=log)
          for c, e in zip(claimed, result.errors)]


class PopulationDivergence(RuntimeError):
  """A population member diverged (reported as ``diverged`` like ``DivergenceError``)."""


class SearchHandle:
  """The search as the workers see it: base config, stage studies, the finished flag."""

  def __init__(self, storage: optuna.storages.BaseStorage, name: str, search_dir: str | None,
               url: str | None = None):
    """Raises ``ValueError`` (one line) when the store has no search ``name`` or the search's
    stored config is invalid (``validate_search_config``)."""
    self.storage, self.name = storage, name
    study = study_lib.load(storage, name)
    if study is None or "config" not in study.user_attrs:
      names = sorted(n for n in optuna.get_all_study_names(storage) if "/stage" not in n)
      raise ValueError(f"--search={name!r}: the store {study_lib.hide_password(url or '')} has no "
                       f"such search; it has: {', '.join(names) or 'none'} (the master, "
                       "scripts/search.py, creates it)")
    self._study_id = storage.get_study_id_from_name(name)
    attrs = study.user_attrs
    self.config = ml_collections.ConfigDict(attrs["config"])
    self.search_dir = search_dir or attrs["search_dir"]
    validate_search_config(self.config, self.search_dir, storage_url=url)
    self.num_stages = int(attrs["num_stages"])
    self.pruner = study_lib.make_pruner(self.config.search)
    self._stages: dict[int, optuna.Study] = {}

  def finished(self) -> bool:
    return bool(self.storage.get_study_user_attrs(self._study_id).get("finished", False))

  def stage(self, index: int) -> optuna.Study | None:
    if index not in self._stages:
      study = study_lib.load(self.storage, study_lib.stage_study_name(self.name, index),
                             pruner=self.pruner)
      if study is None or not study.user_attrs.get("enqueued"):
        return None
      self._stages[index] = study
    return self._stages[index]

  def claim(self, population: int) -> tuple[int, optuna.Study, list[optuna.trial.Trial]]:
    """Up to ``population`` waiting trials of the earliest stage that has any."""
    for index in range(self.num_stages):
      study = self.stage(index)
      if study is None:
        continue
      distributions = Space.from_dict(study.user_attrs["space"]).distributions()
      claimed = []
      while len(claimed) < population:
        trial = study_lib.pop_trial(study, distributions)
        if trial is None:
          break
        claimed.append(trial)
      if claimed:
        return index, study, claimed
    return -1, None, []


def open_search(storage_url: str, search_name: str, search_dir: str | None = None
                ) -> SearchHandle:
  """Opens the store (which must exist: a worker never creates one) and the search in it.

  Raises:
    ValueError: (one line) a bad URL, a store that does not exist, no such search, or an invalid
      stored config.
  """
  study_lib.check_storage_url(storage_url, must_exist=True)
  if search_dir is not None and not os.path.isdir(search_dir):
    raise ValueError(f"--search_dir={search_dir} does not exist; give the search dir as this "
                     "machine sees it (the master's, on a shared filesystem)")
  try:
    storage = study_lib.open_storage(storage_url)
    return SearchHandle(storage, search_name, search_dir, storage_url)
  except (optuna.exceptions.StorageInternalError, ImportError, OSError) as err:
    raise ValueError(f"cannot open the store {study_lib.hide_password(storage_url)}: "
                     f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def serve(storage_url: str, search_name: str, *, search_dir: str | None = None,
          population: int = 1, poll_s: float = 1.0, idle_timeout_s: float = 600.0,
          exit_when_idle: bool = False, max_trials: int = 0, log: Log | None = print,
          handle: SearchHandle | None = None) -> int:
  """Runs trials of the search ``search_name`` until it is finished; returns how many it ran.

  Args:
    storage_url: the store (``study.storage_url``); search_dir: where trial folders go (default:
      the one the master recorded).
    population: trials trained at once in one vmapped program (1 = one at a time).
    poll_s: wait between looks at an empty queue.
    idle_timeout_s: exit after this long with nothing to do (a master that died).
    exit_when_idle: exit as soon as the queue is empty (instead of waiting for later stages).
    max_trials: stop after this many trials (0 = no limit).
    handle: the search, already opened by :func:`open_search` (default: opened here).

  Raises:
    ValueError: ``population < 1``, or what :func:`open_search` raises.
  """
  if int(population) < 1:
    raise ValueError(f"--population={population!r} must be >= 1")
  handle = handle or open_search(storage_url, search_name, search_dir)
  storage = handle.storage
  train_fn = resolve_trainer(search_value(handle.config.search, "trainer"))
  heartbeat_s = float(search_value(handle.config.search, "heartbeat_s"))
  ran = 0
  idle_since = time.time()
  while not max_trials or ran < max_trials:
    stage, study, trials = handle.claim(int(population))
    if trials:
      claimed = [Claimed(study, t, stage, handle.config, handle.search_dir) for t in trials]
      with Heartbeat(storage, [t._trial_id for t in trials], heartbeat_s):
        if len(claimed) == 1 and int(population) == 1:
          run_single(claimed[0], train_fn, log)
        else:
          run_population(claimed, log)
      ran += len(claimed)
      idle_since = time.time()
      continue
    if exit_when_idle or handle.finished() or time.time() - idle_since > idle_timeout_s:
      break
    time.sleep(poll_s)
  return ran
