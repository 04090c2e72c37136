"""The master: creates the study, runs the stages, keeps the workers going, reports.

``run_search(config, search_dir)``:

1. validates the whole config (``validate.py``: nothing runs or is written before), takes the
   search's lock (``lock.py``: one master per search dir and per search in a store), opens the
   store (``study.py``) and records the search (base config, search dir, stages); prints the one
   command that starts a worker on another machine against the same store;
2. launches ``config.search.num_workers`` local worker processes (``scripts/search_worker.py``,
   logs in ``<search_dir>/logs/``);
3. for each stage (``stages.py``): derives its ranges (stage 0: the configured space; later
   stages: narrowed around the previous stage's best trials), draws its points on their scales
   (``space.sample``: random by default) and enqueues them, each with its ``slot`` (its index
   among the stage's points), so that preparing a stage again after an interruption enqueues only
   the slots that are missing; then watches until every trial of the stage has finished: marks
   FAILED the trials of workers that died (no heartbeat for ``grace_s``, or a dead pid on this
   host), renames their folders ``fail_...`` and re-enqueues each point up to
   ``config.search.max_retries`` times (Optuna's retry callback), restarts dead local workers
   while work remains, prints each finished trial; the pruner (median / successive halving) runs
   inside the workers on the epoch-wise validation accuracy they report; then prints the stage's
   border warnings;
4. marks the search finished (the workers exit), writes the report (``results.py``: ranked table,
   ``results.txt``, ``trials.csv``, figures).

Stopping the master (Ctrl-C, SIGTERM) stops its workers; running it again with the same search
dir continues: finished stages are kept, waiting trials stay queued, trials of dead workers are
failed (and retried).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, NamedTuple

import ml_collections
from optuna.trial import TrialState

from research.launch import signals as signals_lib
from research.search import border as border_lib
from research.search import journal as journal_lib
from research.search import lock as lock_lib
from research.search import results as results_lib
from research.search import stages as stages_lib
from research.search import study as study_lib
from research.search import trials as trials_lib
from research.search.space import Space, sample
from research.search.validate import SearchPlan, search_value, validate_search_config

Log = Callable[[str], None]

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "scripts", "search_worker.py")


class SearchFailed(RuntimeError):
  """The search cannot go on (e.g. every local worker died and none may be restarted)."""


class SearchReport(NamedTuple):
  """What a search produced (also written to ``<search_dir>/results.txt``)."""
  search_dir: str
  storage_url: str
  table: str
  warnings: list[str]
  figures: list[str]
  best: results_lib.TrialRow | None
  rows: list[results_lib.TrialRow]


def worker_command(storage_url: str, search_name: str, search_dir: str, population: int = 1
                   ) -> list[str]:
  """The command line of one worker (the same on this machine and on any other)."""
  return [sys.executable, WORKER_SCRIPT, f"--storage={storage_url}", f"--search={search_name}",
          f"--search_dir={os.path.abspath(search_dir)}", f"--population={int(population)}"]


class WorkerPool:
  """The local worker processes; restarts a dead one while work remains (bounded)."""

  def __init__(self, command: list[str], count: int, log_dir: str, max_restarts: int, log: Log):
    self.command, self.count, self.log_dir = command, int(count), log_dir
    self.max_restarts, self.restarts, self.log = int(max_restarts), 0, log
    self.procs: list[subprocess.Popen] = []
    os.makedirs(log_dir, exist_ok=True)

  def _start(self, slot: int) -> subprocess.Popen:
    out = open(os.path.join(self.log_dir, f"worker{slot}.log"), "a")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=env)
    out.close()
    return proc

  def start(self) -> None:
    self.procs = [self._start(i) for i in range(self.count)]

  def keep_alive(self, work_left: bool) -> None:
    for i, proc in enumerate(self.procs):
      code = proc.poll()
      if code is None or not work_left:
        continue
      if self.restarts >= self.max_restarts:
        continue
      self.restarts += 1
      self.log(f"[master] worker {i} (pid {proc.pid}) exited with {code}; restarting it "
               f"({self.restarts}/{self.max_restarts}), log: {self.log_dir}/worker{i}.log")
      self.procs[i] = self._start(i)

  def alive(self) -> int:
    return sum(p.poll() is None for p in self.procs)

  def stop(self, timeout_s: float = 60.0) -> None:
    """Waits for the workers to leave (they see ``finished``), then terminates the rest."""
    deadline = time.time() + timeout_s
    for proc in self.procs:
      try:
        proc.wait(timeout=max(0.1, deadline - time.time()))
      except subprocess.TimeoutExpired:
        proc.terminate()
    for proc in self.procs:
      try:
        proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        proc.kill()


def _stage_space(storage, name: str, stage: stages_lib.Stage, base: Space, search_cfg) -> Space:
  if stage.index == 0:
    return base
  previous = study_lib.load(storage, study_lib.stage_study_name(name, stage.index - 1))
  space = Space.from_dict(previous.user_attrs["space"])
  done = previous.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
  return stages_lib.narrow(space, [t.params for t in done], [t.value for t in done],
                           top_k=int(search_value(search_cfg, "top_k")),
                           pad=float(search_value(search_cfg, "pad")))


def prepare_stage(storage, name: str, stage: stages_lib.Stage, base: Space, search_cfg,
                  base_seed: int, log: Log, *, enqueue: Callable[..., None] | None = None
                  ) -> "study_lib.optuna.Study":
  """Creates (or reloads) the stage's study and enqueues each of its points exactly once.

  Idempotent: the stage's space is stored before any point is enqueued and read back on a second
  call, the points are drawn from it with a fixed seed, and only the slots (point indices) that no
  trial of the stage holds yet are enqueued; ``enqueued`` is set last. An interruption at any
  moment (SIGTERM while enqueueing) is repaired by the next call. ``enqueue(study, points,
  user_attrs)`` adds the trials (default :func:`research.search.study.enqueue`).
  """
  study = study_lib.create_or_load(storage, study_lib.stage_study_name(name, stage.index))
  attrs = study.user_attrs
  if attrs.get("enqueued"):
    log(f"[master] stage {stage.index}: continuing ({study_lib.counts(study)})")
    return study
  if "space" in attrs:
    space = Space.from_dict(attrs["space"])
  else:
    space = _stage_space(storage, name, stage, base, search_cfg)
    study.set_user_attr("num_epochs", stage.num_epochs)
    study_lib.set_json_attr(study, "space", space.to_dict())
  points = sample(space, stage.num_trials, method=search_value(search_cfg, "method"),
                  seed=int(search_value(search_cfg, "seed")) * 1000 + stage.index)
  present = {t.user_attrs.get("slot") for t in study.get_trials(deepcopy=False)}
  slots = [i for i in range(len(points)) if i not in present]
  attrs = [{"slot": i, "seed": base_seed + 1000 * stage.index + i, "point": points[i]}
           for i in slots]
  log(f"[master] stage {stage.index}: enqueueing {len(slots)} trials")
  (enqueue or study_lib.enqueue)(study, [points[i] for i in slots], attrs)
  study.set_user_attr("num_trials", len(points))
  study.set_user_attr("enqueued", True)
  resumed = (f" ({len(points) - len(slots)} were already enqueued)" if len(slots) < len(points)
             else "")
  log(f"[master] stage {stage.index}: {len(points)} trials x {stage.num_epochs} epochs, "
      f"{search_value(search_cfg, 'method')} on {space.describe()}{resumed}")
  return study


def _stage_index(study) -> int:
  return int(study.study_name.rsplit("stage", 1)[-1])


def clean_running_folders(study, search_dir: str) -> list[str]:
  """Renames the ``running_...`` folders of the stage's FAILED trials (killed workers, trials
  failed by an earlier master) to ``fail_...``; returns the new paths."""
  root = os.path.join(search_dir, trials_lib.TRIALS_DIR)
  if not os.path.isdir(root):
    return []
  stage = _stage_index(study)
  failed = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
  renamed = []
  for name in sorted(os.listdir(root)):
    parsed = trials_lib.parse_running_name(name)
    if parsed is None or parsed[0] != stage or parsed[1] not in failed:
      continue
    reason = failed[parsed[1]].user_attrs.get("fail_reason", "its worker died")
    path = trials_lib.mark_failed(search_dir, stage, parsed[1], reason)
    if path:
      renamed.append(path)
  return renamed


def watch_stage(study, pool: WorkerPool | None, search_cfg, log: Log, poll_s: float = 1.0, *,
                search_dir: str | None = None,
                retry: Callable[..., None] | None = None,
                on_poll: Callable[[], None] | None = None) -> None:
  """Returns when no trial of the stage is waiting or running; fails the trials of dead workers
  (renaming their folders under ``search_dir``) and retries them with ``retry`` (default
  :class:`~research.search.study.RetryStaleTrial` with ``max_retries``); ``on_poll`` runs on
  every look (the master refreshes its stamp and probes the store's lock there).

  An ``on_poll`` slower than ``grace_s / 4`` means the store stalled (its lock held); heartbeats
  are judged again only after the store has answered for ``grace_s`` since
  (:func:`~research.search.study.is_dead`'s ``watched_s``). Any stall long enough to age a live
  worker's heartbeat past ``grace_s`` blocks that probe for longer (for ``grace_s >= 4 poll_s``).
  """
  reported: set[int] = set()
  grace_s = float(search_value(search_cfg, "grace_s"))
  pid_check = bool(search_value(search_cfg, "pid_check"))
  retry = retry or study_lib.RetryStaleTrial(int(search_value(search_cfg, "max_retries")), log)
  stage = _stage_index(study)

  def on_failed(trial, reason):
    if search_dir is not None:
      trials_lib.mark_failed(search_dir, stage, trial.number, reason)

  if search_dir is not None:
    clean_running_folders(study, search_dir)
  watched_since = time.monotonic()  # a master that just started has seen no store yet
  while True:
    if on_poll is not None:
      started = time.monotonic()
      on_poll()
      if time.monotonic() - started > grace_s / 4:
        watched_since = time.monotonic()
        log(f"[master] the store stalled for {watched_since - started:.1f}s; trials are judged "
            f"by their heartbeats again {grace_s:g}s from now")
    study_lib.fail_dead_trials(study, grace_s=grace_s, pid_check=pid_check, retry=retry,
                               on_failed=on_failed, log=log,
                               watched_s=(None if on_poll is None
                                          else time.monotonic() - watched_since))
    trials = study.get_trials(deepcopy=False)
    for t in trials:
      if t.state.is_finished() and t.number not in reported:
        reported.add(t.number)
        value = "-" if t.value is None else f"{t.value:.4f}"
        params = t.params or t.user_attrs.get("point", {})
        text = " ".join(f"{k}={v:.3g}" for k, v in sorted(params.items()))
        reason = t.user_attrs.get("fail_reason")
        log(f"[master] {study.study_name} trial {t.number}: {t.state.name} val_acc={value} {text}"
            + (f" ({reason.splitlines()[0][:120]})" if reason and t.state == TrialState.FAIL
               else ""))
    pending = [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    if not pending:
      return
    if pool is not None:
      pool.keep_alive(work_left=True)
      if pool.alive() == 0 and pool.restarts >= pool.max_restarts and not any(
          t.state == TrialState.RUNNING for t in trials):
        raise SearchFailed(f"all local workers exited and none may be restarted; "
                           f"{len(pending)} trials of {study.study_name} still wait; see the "
                           f"worker logs in {pool.log_dir}")
    time.sleep(poll_s)


def stage_warnings(study, search_cfg) -> list[str]:
  """Border warnings of one finished stage, against the CONFIGURED ranges
  (``config.search.space``): a narrowed stage's edge is no reason to widen anything, and the
  advice never names a bound inside the configured range."""
  configured = Space.from_dict(search_cfg.space.to_dict())
  done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
  found = border_lib.border_warnings(configured, [t.params for t in done],
                                     [t.value for t in done],
                                     fraction=float(search_value(search_cfg, "border_fraction")),
                                     top_k=int(search_value(search_cfg, "top_k")))
  return [f"stage {_stage_index(study)}: {w.message}" for w in found]


def report(storage, name: str, search_dir: str, num_stages: int, search_cfg,
           warnings: list[str], storage_url: str) -> SearchReport:
  """Ranked table, figures, ``results.txt`` and ``trials.csv`` of a search (from the store)."""
  rows, spaces = results_lib.collect(storage, name, num_stages)
  names = spaces[0].names if spaces else []
  table = results_lib.ranked_table(rows, names)
  figures = []
  if spaces and results_lib.ranked(rows, ("COMPLETE", "PRUNED")):
    fig_dir = os.path.join(search_dir, "figures")
    figures.append(results_lib.plot_accuracy_vs_params(
        rows, spaces[0], os.path.join(fig_dir, "val_accuracy_vs_hyperparams.png"),
        float(search_value(search_cfg, "border_fraction"))))
    figures.append(results_lib.plot_loss_curves(
        rows, search_dir, os.path.join(fig_dir, "loss_curves_best.png"),
        k=int(search_value(search_cfg, "report_top_k"))))
  csv_path = results_lib.write_csv(rows, names, os.path.join(search_dir, results_lib.CSV_FILE))
  _, problems = results_lib.scan_trials(search_dir)
  ranked = results_lib.ranked(rows)
  text = [table, ""] + (["border warnings:"] + warnings if warnings else ["border warnings: none"])
  text += [""] + (["problems:"] + problems if problems else []) + [f"figure: {f}" for f in figures]
  text += [f"trials: {csv_path}"]
  with open(os.path.join(search_dir, "results.txt"), "w") as f:
    f.write("\n".join(text) + "\n")
  return SearchReport(os.path.abspath(search_dir), storage_url, table, warnings + problems,
                      figures, ranked[0] if ranked else None, rows)


class Search(NamedTuple):
  """An opened search: its store, its record in the store and its stages."""
  storage: Any
  url: str
  study: Any            # the search's own study (user attributes: config, search_dir, ...)
  stages: list
  space: Space
  name: str
  retry: Any            # the retry callback of dead workers' trials


def open_search(config: ml_collections.ConfigDict, search_dir: str,
                plan: SearchPlan | None = None, log: Log | None = None) -> Search:
  """Opens the store and records the search in it (idempotent); validates ``config.search``
  first unless ``plan`` (from :func:`validate_search_config`) is given.

  Raises:
    ValueError: a bad config value.
    SearchLocked: another live master runs this search in the store.
  """
  search_cfg = config.search
  plan = plan or validate_search_config(config, search_dir)
  os.makedirs(search_dir, exist_ok=True)
  retry = study_lib.RetryStaleTrial(int(search_value(search_cfg, "max_retries")), log)
  storage = study_lib.open_storage(plan.storage_url,
                                   heartbeat_s=float(search_value(search_cfg, "heartbeat_s")),
                                   grace_s=float(search_value(search_cfg, "grace_s")),
                                   retry=retry)
  search = study_lib.create_or_load(storage, plan.name)
  lock_lib.check_stamp(search, search_dir, float(search_value(search_cfg, "grace_s")))
  search.set_user_attr("config", trials_lib.config_to_json(config))
  search.set_user_attr("search_dir", os.path.abspath(search_dir))
  search.set_user_attr("num_stages", len(plan.stages))
  search.set_user_attr("finished", False)
  return Search(storage, plan.storage_url, search, plan.stages, plan.space, plan.name, retry)


def run_search(config: ml_collections.ConfigDict, search_dir: str, *, log: Log = print,
               launch_workers: bool = True, plan: SearchPlan | None = None) -> SearchReport:
  """Runs (or continues) the coarse-to-fine search of ``config.search``; see the module doc.

  Ctrl-C / SIGTERM stop it between two store operations, never inside one
  (:func:`research.launch.signals.deferred_stop`): a transaction cut in the middle kept SQLite's
  write lock and hung the master's clean-up.

  Raises:
    ValueError: a bad config value (nothing was written).
    SearchLocked: another master runs this search (nothing was written).
    SearchFailed: the search cannot go on (every local worker died).
    KeyboardInterrupt: stopped by Ctrl-C / SIGTERM (workers stopped, stamp cleared).
  """
  with signals_lib.deferred_stop() as stop:
    return _run_search(config, search_dir, log, launch_workers, plan, stop)


def _enqueue_until_stopped(stop: signals_lib.Stop) -> Callable[..., None]:
  """``prepare_stage``'s ``enqueue``: one trial at a time, stopping between two."""
  def enqueue(study, points, user_attrs):
    for point, attrs in zip(points, user_attrs):
      stop.check()
      study_lib.enqueue(study, [point], [attrs])
  return enqueue


def _run_search(config: ml_collections.ConfigDict, search_dir: str, log: Log,
                launch_workers: bool, plan: SearchPlan | None,
                stop: signals_lib.Stop) -> SearchReport:
  search_cfg = config.search
  plan = plan or validate_search_config(config, search_dir)
  os.makedirs(search_dir, exist_ok=True)
  lock = lock_lib.MasterLock(search_dir)
  previous = lock.acquire()
  if previous:
    log(f"[master] took over the lock of master {previous}, which no longer runs")
  opened = None
  pool = None
  try:
    opened = open_search(config, search_dir, plan, log)
    storage, url, name, search = opened.storage, opened.url, opened.name, opened.study
    heartbeat_s = float(search_value(search_cfg, "heartbeat_s"))
    lock_lib.write_stamp(search, search_dir)
    last_beat = [time.time()]

    probe_store = journal_lib.lock_probe(url)

    def refresh_stamp():
      stop.check()
      probe_store()
      if time.time() - last_beat[0] >= heartbeat_s:
        lock_lib.write_stamp(search, search_dir)
        last_beat[0] = time.time()

    population = int(search_value(search_cfg, "population"))
    command = worker_command(url, name, search_dir, population)
    shown = [study_lib.hide_password(c) for c in command[1:]]
    log(f"[master] search {name!r}: store {study_lib.hide_password(url)}, "
        f"dir {os.path.abspath(search_dir)}")
    log("[master] start a worker on another machine (same store, shared search dir) with:\n  "
        "python " + " ".join(shlex.quote(c) for c in shown))
    warnings: list[str] = []
    num_workers = int(search_value(search_cfg, "num_workers"))
    for stage in opened.stages:
      stop.check()
      study = prepare_stage(storage, name, stage, opened.space, search_cfg, int(config.seed), log,
                            enqueue=_enqueue_until_stopped(stop))
      pending = study_lib.counts(study)
      if (pool is None and launch_workers and num_workers > 0
          and pending["WAITING"] + pending["RUNNING"]):  # started once there is work
        pool = WorkerPool(command, num_workers, os.path.join(search_dir, "logs"),
                          int(search_value(search_cfg, "max_worker_restarts")), log)
        pool.start()
        log(f"[master] {pool.count} local workers started (population {population} each), "
            f"logs in {pool.log_dir}")
      watch_stage(study, pool, search_cfg, log, search_dir=search_dir, retry=opened.retry,
                  on_poll=refresh_stamp)
      log(f"[master] stage {stage.index} done: {study_lib.counts(study)}")
      stage_warn = stage_warnings(study, search_cfg)
      for line in stage_warn:
        log(f"[master] WARNING {line}")
      warnings += stage_warn
    search.set_user_attr("finished", True)
    return report(storage, name, search_dir, len(opened.stages), search_cfg, warnings, url)
  finally:
    if pool is not None:
      if opened is None or not opened.study.user_attrs.get("finished"):
        for proc in pool.procs:  # interrupted: stop the workers now (their trials get failed
          proc.terminate()       # and retried when the search is continued)
      pool.stop()
    if opened is not None:
      try:
        lock_lib.clear_stamp(opened.study)
      except Exception:  # noqa: BLE001 (the store is gone: the stamp expires after grace_s)
        pass
    lock.release()
