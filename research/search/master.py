"""The master: creates the study, runs the stages, keeps the workers going, reports.

``run_search(config, search_dir)``:

1. opens the store (``study.py``) and records the search (base config, search dir, stages);
   prints the one command that starts a worker on another machine against the same store;
2. launches ``config.search.num_workers`` local worker processes (``scripts/search_worker.py``,
   logs in ``<search_dir>/logs/``);
3. for each stage (``stages.py``): derives its ranges (stage 0: the configured space; later
   stages: narrowed around the previous stage's best trials), draws its points on their scales
   (``space.sample``: random by default) and enqueues them; then watches until every trial of the
   stage has finished: marks FAILED the trials of workers that died (and re-enqueues each once,
   ``config.search.max_retries``), restarts dead local workers while work remains, prints each
   finished trial; the pruner (median / successive halving) runs inside the workers on the
   epoch-wise validation accuracy they report; then prints the stage's border warnings;
4. marks the search finished (the workers exit), writes the report (``results.py``).

Stopping the master (Ctrl-C) stops its workers; running it again with the same search dir
continues: finished stages are kept, waiting trials stay queued, trials of dead workers are
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

from research.search import border as border_lib
from research.search import results as results_lib
from research.search import stages as stages_lib
from research.search import study as study_lib
from research.search import trials as trials_lib
from research.search.space import Space, sample

Log = Callable[[str], None]

WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "scripts", "search_worker.py")


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
    out = open(os.path.join(self.log_dir, f"worker{slot}.log"), "a")  # noqa: SIM115
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
                           top_k=int(search_cfg.top_k), pad=float(search_cfg.pad))


def prepare_stage(storage, name: str, stage: stages_lib.Stage, base: Space, search_cfg,
                  base_seed: int, log: Log) -> "study_lib.optuna.Study":
  """Creates (or reloads) the stage's study and enqueues its points once."""
  study = study_lib.create_or_load(storage, study_lib.stage_study_name(name, stage.index))
  if study.user_attrs.get("enqueued"):
    log(f"[master] stage {stage.index}: continuing ({study_lib.counts(study)})")
    return study
  space = _stage_space(storage, name, stage, base, search_cfg)
  points = sample(space, stage.num_trials, method=search_cfg.method,
                  seed=int(search_cfg.seed) * 1000 + stage.index)
  study_lib.set_json_attr(study, "space", space.to_dict())
  study.set_user_attr("num_epochs", stage.num_epochs)
  attrs = [{"seed": base_seed + 1000 * stage.index + i, "point": point, "retries": 0}
           for i, point in enumerate(points)]
  study_lib.enqueue(study, points, attrs)
  study.set_user_attr("enqueued", True)
  log(f"[master] stage {stage.index}: {len(points)} trials x {stage.num_epochs} epochs, "
      f"{search_cfg.method} on {space.describe()}")
  return study


def _retry(study, number: int, max_retries: int, log: Log) -> None:
  frozen = study.get_trials(deepcopy=False)[number]
  retries = int(frozen.user_attrs.get("retries", 0))
  if retries >= max_retries:
    return
  point = frozen.user_attrs.get("point") or frozen.params
  study.enqueue_trial(point, user_attrs={"seed": frozen.user_attrs.get("seed", 0), "point": point,
                                         "retries": retries + 1, "retry_of": number})
  log(f"[master] {study.study_name} trial {number} re-enqueued (attempt {retries + 2})")


def watch_stage(study, pool: WorkerPool | None, search_cfg, log: Log, poll_s: float = 1.0) -> None:
  """Returns when no trial of the stage is waiting or running; reaps dead workers' trials."""
  reported: set[int] = set()
  grace_s = float(search_cfg.get("grace_s", 300.0))
  while True:
    for number in study_lib.fail_dead_trials(study, grace_s=grace_s, log=log):
      _retry(study, number, int(search_cfg.get("max_retries", 1)), log)
    trials = study.get_trials(deepcopy=False)
    for t in trials:
      if t.state.is_finished() and t.number not in reported:
        reported.add(t.number)
        value = "-" if t.value is None else f"{t.value:.4f}"
        params = " ".join(f"{k}={v:.3g}" for k, v in sorted(t.params.items()))
        reason = t.user_attrs.get("fail_reason")
        log(f"[master] {study.study_name} trial {t.number}: {t.state.name} val_acc={value} {params}"
            + (f" ({reason.splitlines()[0][:120]})" if reason else ""))
    pending = [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    if not pending:
      return
    if pool is not None:
      pool.keep_alive(work_left=True)
      if pool.alive() == 0 and pool.restarts >= pool.max_restarts and not any(
          t.state == TrialState.RUNNING for t in trials):
        raise RuntimeError(f"all local workers exited and none may be restarted; "
                           f"{len(pending)} trials of {study.study_name} still wait. See the "
                           f"worker logs in {pool.log_dir}.")
    time.sleep(poll_s)


def stage_warnings(study, search_cfg) -> list[str]:
  """Border warnings of one finished stage."""
  space = Space.from_dict(study.user_attrs["space"])
  done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
  found = border_lib.border_warnings(space, [t.params for t in done], [t.value for t in done],
                                     fraction=float(search_cfg.border_fraction),
                                     top_k=int(search_cfg.top_k))
  return [f"stage {study.study_name.rsplit('stage', 1)[-1]}: {w.message}" for w in found]


def report(storage, name: str, search_dir: str, num_stages: int, search_cfg,
           warnings: list[str], storage_url: str) -> SearchReport:
  """Ranked table, figures and ``results.txt`` of a search (from the store)."""
  rows, spaces = results_lib.collect(storage, name, num_stages)
  names = spaces[0].names if spaces else []
  table = results_lib.ranked_table(rows, names)
  figures = []
  if spaces and results_lib.ranked(rows, ("COMPLETE", "PRUNED")):
    fig_dir = os.path.join(search_dir, "figures")
    figures.append(results_lib.plot_accuracy_vs_params(
        rows, spaces[0], os.path.join(fig_dir, "val_accuracy_vs_hyperparams.png"),
        float(search_cfg.border_fraction)))
    figures.append(results_lib.plot_loss_curves(
        rows, search_dir, os.path.join(fig_dir, "loss_curves_best.png"),
        k=int(search_cfg.get("report_top_k", 5))))
  _, problems = results_lib.scan_trials(search_dir)
  ranked = results_lib.ranked(rows)
  text = [table, ""] + (["border warnings:"] + warnings if warnings else ["border warnings: none"])
  text += [""] + (["problems:"] + problems if problems else []) + [f"figure: {f}" for f in figures]
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


def open_search(config: ml_collections.ConfigDict, search_dir: str) -> Search:
  """Validates ``config.search``, opens the store and records the search in it (idempotent)."""
  search_cfg = config.search
  stages = stages_lib.stages_from_config(search_cfg)
  base_space = Space.from_dict(search_cfg.space.to_dict())
  for param in base_space.params:  # a bad path fails here, not in every worker
    trials_lib.trial_config(config, {param.name: param.path}, {param.name: param.low},
                            num_epochs=1, seed=0)
  os.makedirs(search_dir, exist_ok=True)
  url = study_lib.storage_url(search_cfg.storage, search_dir)
  storage = study_lib.open_storage(url)
  name = search_cfg.name
  search = study_lib.create_or_load(storage, name)
  search.set_user_attr("config", trials_lib.config_to_json(config))
  search.set_user_attr("search_dir", os.path.abspath(search_dir))
  search.set_user_attr("num_stages", len(stages))
  search.set_user_attr("finished", False)
  return Search(storage, url, search, stages, base_space, name)


def run_search(config: ml_collections.ConfigDict, search_dir: str, *, log: Log = print,
               launch_workers: bool = True) -> SearchReport:
  """Runs (or continues) the coarse-to-fine search of ``config.search``; see the module doc."""
  search_cfg = config.search
  opened = open_search(config, search_dir)
  storage, url, name, search = opened.storage, opened.url, opened.name, opened.study
  population = int(search_cfg.get("population", 1))
  command = worker_command(url, name, search_dir, population)
  log(f"[master] search {name!r}: store {url}, dir {os.path.abspath(search_dir)}")
  log("[master] start a worker on another machine (same store, shared search dir) with:\n  "
      "python " + " ".join(shlex.quote(c) for c in command[1:]))
  pool = None
  warnings: list[str] = []
  try:
    for stage in opened.stages:
      study = prepare_stage(storage, name, stage, opened.space, search_cfg, int(config.seed), log)
      pending = study_lib.counts(study)
      if (pool is None and launch_workers and int(search_cfg.num_workers) > 0
          and pending["WAITING"] + pending["RUNNING"]):  # started once there is work
        pool = WorkerPool(command, int(search_cfg.num_workers), os.path.join(search_dir, "logs"),
                          int(search_cfg.get("max_worker_restarts", 2)), log)
        pool.start()
        log(f"[master] {pool.count} local workers started (population {population} each), "
            f"logs in {pool.log_dir}")
      watch_stage(study, pool, search_cfg, log)
      log(f"[master] stage {stage.index} done: {study_lib.counts(study)}")
      stage_warn = stage_warnings(study, search_cfg)
      for line in stage_warn:
        log(f"[master] WARNING {line}")
      warnings += stage_warn
    search.set_user_attr("finished", True)
  finally:
    if pool is not None:
      if not search.user_attrs.get("finished"):
        for proc in pool.procs:  # interrupted: stop the workers now (their trials get failed
          proc.terminate()       # and retried when the search is continued)
      pool.stop()
  return report(storage, name, search_dir, len(opened.stages), search_cfg, warnings, url)
