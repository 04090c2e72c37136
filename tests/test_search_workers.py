"""Workers and the master on one SQLite store: unique trials, no lost results, killed workers.

The worker processes train with ``research.search.synthetic:train``: a deterministic accuracy
per learning rate, a short sleep per epoch (``config.synthetic.epoch_s``), no JAX, so these tests
exercise the store, the queue and the processes, not training.
"""
import json
import os
import signal
import subprocess
import sys
import time

import ml_collections
import pytest

from research.search.synthetic import accuracy as fake_accuracy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "scripts", "search_worker.py")


def _config(num_trials: int, epochs: int, sleep: float, lr_range=(1e-4, 1e-1)):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.synthetic = ml_collections.ConfigDict({"epoch_s": sleep})
  config.optimizer = ml_collections.ConfigDict({"learning_rate": 1e-3})
  config.train = ml_collections.ConfigDict({"num_epochs": 1})
  config.search = ml_collections.ConfigDict({
      "name": "test", "storage": "", "method": "random", "seed": 0,
      "space": {"learning_rate": {"path": "optimizer.learning_rate", "low": lr_range[0],
                                  "high": lr_range[1], "scale": "log"}},
      "stage_epochs": (epochs,), "stage_trials": (num_trials,), "top_k": 2, "pad": 0.1,
      "border_fraction": 0.1, "pruner": "none", "num_workers": 0,
      "trainer": "research.search.synthetic:train", "heartbeat_s": 0.5, "grace_s": 60.0,
      "max_retries": 1})
  return config


def _start_worker(search_dir, url, *extra):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), ROOT]),
             JAX_PLATFORMS="cpu")
  log = open(os.path.join(search_dir, f"w{time.time_ns()}.log"), "w")
  return subprocess.Popen([sys.executable, WORKER, f"--storage={url}", "--search=test",
                           "--poll=0.2", *extra], stdout=log, stderr=subprocess.STDOUT, env=env)


def _prepare(tmp_path, config):
  from research.search import master
  search_dir = str(tmp_path / "search")
  opened = master.open_search(config, search_dir)
  study = master.prepare_stage(opened.storage, opened.name, opened.stages[0], opened.space,
                               config.search, 0, log=lambda _: None)
  return search_dir, opened, study


def test_two_concurrent_workers_unique_trials_no_lost_results(tmp_path):
  from optuna.trial import TrialState
  from research.search import results
  config = _config(num_trials=12, epochs=2, sleep=0.05, lr_range=(1e-4, 3.0))
  search_dir, opened, study = _prepare(tmp_path, config)
  workers = [_start_worker(search_dir, opened.url, "--exit_when_idle") for _ in range(2)]
  codes = [w.wait(timeout=90) for w in workers]
  assert codes == [0, 0]
  trials = study.get_trials()
  assert len(trials) == 12  # nothing created beyond the stage's budget
  by_worker = {}
  for t in trials:
    by_worker.setdefault(t.user_attrs["worker"], []).append(t.number)
    lr = t.params["learning_rate"]
    if lr > 1.0:  # diverged: failed, reason recorded, the worker moved on
      assert t.state == TrialState.FAIL and "diverged" in t.user_attrs["fail_reason"]
      assert t.user_attrs["workdir"] == f"fail_s0_t{t.number:04d}"
    else:         # no lost result: the value is exactly the trainer's best accuracy
      assert t.state == TrialState.COMPLETE
      assert t.value == pytest.approx(fake_accuracy(lr, 2), abs=1e-12)
      assert t.intermediate_values == pytest.approx({1: fake_accuracy(lr, 1),
                                                     2: fake_accuracy(lr, 2)})
      assert t.user_attrs["workdir"] == f"acc{t.value:.4f}_s0_t{t.number:04d}"
  # both workers took trials, and no trial was run twice
  assert len(by_worker) == 2 and all(by_worker.values())
  numbers = sorted(n for ns in by_worker.values() for n in ns)
  assert numbers == list(range(12))
  folders = sorted(os.listdir(os.path.join(search_dir, "trials")))
  assert len(folders) == 12 and not [f for f in folders if f.startswith("running_")]
  for t in trials:
    with open(os.path.join(search_dir, "trials", t.user_attrs["workdir"], "trial.json")) as f:
      info = json.load(f)
    assert info["number"] == t.number and info["params"] == t.params
  # `ls | sort` ranks the finished trials; top_trials agrees
  done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
  ranked = [f for f in folders if f.startswith("acc")]
  assert ranked[::-1] == [t.user_attrs["workdir"] for t in done]
  assert [os.path.basename(p) for p in results.top_trials(search_dir, 3)] == ranked[::-1][:3]


def test_killed_worker_loses_only_its_trial(tmp_path):
  from optuna.trial import TrialState
  from research.search import master, study as study_lib
  config = _config(num_trials=5, epochs=4, sleep=0.4)
  search_dir, opened, study = _prepare(tmp_path, config)
  victim = _start_worker(search_dir, opened.url)
  # the victim claims a trial and reports at least one epoch; then it is killed mid-trial
  deadline = time.time() + 60
  running = []
  while time.time() < deadline and not running:
    running = [t for t in study.get_trials(states=(TrialState.RUNNING,))
               if t.intermediate_values]
    time.sleep(0.1)
  assert running, "the worker never started a trial"
  killed = running[0].number
  survivor = _start_worker(search_dir, opened.url)
  victim.send_signal(signal.SIGKILL)
  victim.wait(timeout=10)
  master.watch_stage(study, None, config.search, log=lambda _: None, poll_s=0.2,
                     search_dir=search_dir)
  opened.study.set_user_attr("finished", True)
  assert survivor.wait(timeout=30) == 0  # the other worker went on and left when told
  trials = study.get_trials()
  dead = trials[killed]
  assert dead.state == TrialState.FAIL
  assert "exited" in dead.user_attrs["fail_reason"]
  retries = [t for t in trials if t.user_attrs.get("retry_of") == killed]
  assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
  assert retries[0].params == dead.params or retries[0].params == dead.user_attrs["point"]
  others = [t for t in trials if t.number != killed]
  assert len(others) == 5 and all(t.state == TrialState.COMPLETE for t in others)
  assert study_lib.counts(study)["COMPLETE"] == 5
  # the killed trial's folder is renamed after its outcome, with the reason in its trial.json;
  # the others are ranked
  folders = os.listdir(os.path.join(search_dir, "trials"))
  assert f"fail_s0_t{killed:04d}" in folders and not [f for f in folders if "running" in f]
  with open(os.path.join(search_dir, "trials", f"fail_s0_t{killed:04d}", "trial.json")) as f:
    info = json.load(f)
  assert info["state"] == "FAIL" and info["fail_reason"] == dead.user_attrs["fail_reason"]
  assert sum(f.startswith("acc") for f in folders) == 5


def _age_heartbeat(storage, trial_id, seconds):
  """Moves a running trial's last heartbeat ``seconds`` into the past (Optuna's heartbeat row on
  SQL stores, the ``heartbeat`` user attribute on the journal store)."""
  import datetime
  from optuna.storages._rdb import models
  from research.search import study as study_lib
  backend = study_lib.rdb_backend(storage)
  if backend is None:
    storage.set_trial_user_attr(trial_id, "heartbeat", time.time() - seconds)
    return
  session = backend.scoped_session()
  row = session.query(models.TrialHeartbeatModel).filter_by(trial_id=trial_id).one()
  row.heartbeat = row.heartbeat - datetime.timedelta(seconds=seconds)
  session.commit()
  session.close()


@pytest.mark.parametrize("store", ["sqlite", "journal"])
def test_stale_heartbeat_from_another_machine_fails_the_trial(tmp_path, store):
  from optuna.trial import TrialState
  from research.search import study as study_lib
  config = _config(num_trials=2, epochs=1, sleep=0.0)
  if store == "journal":
    config.search.storage = f"journal:{tmp_path}/search.journal"
  _, opened, study = _prepare(tmp_path, config)
  trial = study_lib.pop_trial(study)
  trial.set_user_attr("worker", "elsewhere:123")
  _age_heartbeat(opened.storage, trial._trial_id, 100)
  assert study_lib.fail_dead_trials(study, grace_s=1000) == []
  assert study_lib.fail_dead_trials(study, grace_s=60) == [trial.number]
  frozen = study.get_trials()[trial.number]
  assert frozen.state == TrialState.FAIL
  assert frozen.user_attrs["fail_reason"].startswith("no heartbeat from worker elsewhere:123 for 1")


def test_storage_urls(tmp_path):
  from research.search import study as study_lib
  d = str(tmp_path)
  assert study_lib.storage_url("", d) == f"sqlite:///{d}/study.db"
  assert study_lib.storage_url("journal:rel.log", d) == "journal:" + os.path.abspath("rel.log")
  # postgresql:// means psycopg 3 (the [postgres] extra), not SQLAlchemy's default psycopg2
  assert study_lib.storage_url("postgresql://u@h/db", d) == "postgresql+psycopg://u@h/db"
  assert study_lib.storage_url("postgresql+psycopg2://u@h/db", d) == "postgresql+psycopg2://u@h/db"
  with pytest.raises(ValueError, match="storage='study' is neither"):
    study_lib.storage_url("study", d)
  # the journal store works as a drop-in: claims are unique there too
  storage = study_lib.open_storage(study_lib.storage_url(f"journal:{d}/s.journal", d))
  study = study_lib.create_or_load(storage, "j")
  study.enqueue_trial({"x": 1.0})
  assert study_lib.pop_trial(study) is not None and study_lib.pop_trial(study) is None


def test_master_runs_stages_with_local_workers_and_continues(tmp_path, monkeypatch):
  from research.search import master, study as study_lib
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.path.dirname(__file__), ROOT]))
  config = _config(num_trials=6, epochs=1, sleep=0.0, lr_range=(1e-4, 1e-1))
  config.search.stage_epochs, config.search.stage_trials = (1, 2), (6, 3)
  config.search.num_workers = 2
  search_dir = str(tmp_path / "search")
  lines = []
  report = master.run_search(config, search_dir, log=lines.append)
  text = "\n".join(lines)
  assert "python " in text and "--storage=sqlite:///" in text  # the remote-worker command
  storage = study_lib.open_storage(report.storage_url)
  stage0 = study_lib.load(storage, "test/stage0")
  stage1 = study_lib.load(storage, "test/stage1")
  assert study_lib.counts(stage0)["COMPLETE"] == 6 and study_lib.counts(stage1)["COMPLETE"] == 3
  # stage 1 sampled inside the range narrowed around stage 0's two best trials
  low, high = (stage1.user_attrs["space"]["learning_rate"][k] for k in ("low", "high"))
  best = sorted(stage0.get_trials(), key=lambda t: -t.value)[:2]
  assert low <= min(t.params["learning_rate"] for t in best) <= high
  assert all(low <= t.params["learning_rate"] <= high for t in stage1.get_trials())
  assert high / low < 1e3  # narrower than the 3-decade stage-0 range
  # fake accuracy peaks at lr = 1e-2: the best trial is the one closest to it
  assert report.best.value == max(t.value for t in stage0.get_trials() + stage1.get_trials())
  assert report.table.splitlines()[1].split()[3] == f"{report.best.value:.4f}"
  assert os.path.exists(os.path.join(search_dir, "results.txt"))
  # running it again continues the finished search: nothing is trained twice
  again = master.run_search(config, search_dir, log=lines.append)
  assert len(stage0.get_trials()) == 6 and len(stage1.get_trials()) == 3
  assert again.best == report.best


def test_master_stopped_mid_stage_continues_without_losing_or_repeating_trials(tmp_path,
                                                                             monkeypatch):
  """Ctrl-C (or SIGTERM, which scripts/search.py turns into it) in the middle of a stage stops the
  local workers; running the master again fails and retries their interrupted trials once, keeps
  the finished ones, and completes every point of the stage exactly once."""
  from optuna.trial import TrialState
  from research.search import master, study as study_lib
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.path.dirname(__file__), ROOT]))
  config = _config(num_trials=8, epochs=2, sleep=0.4)
  config.search.num_workers = 2
  search_dir = str(tmp_path / "search")
  pools = []
  original_start = master.WorkerPool.start

  def recording_start(pool):
    pools.append(pool)
    original_start(pool)

  monkeypatch.setattr(master.WorkerPool, "start", recording_start)

  def stop_after_first_result(line):
    if ": COMPLETE" in line:
      raise KeyboardInterrupt  # what Ctrl-C does while the master watches the stage

  with pytest.raises(KeyboardInterrupt):
    master.run_search(config, search_dir, log=stop_after_first_result)
  assert all(proc.poll() is not None for proc in pools[0].procs)  # the workers were stopped
  storage = study_lib.open_storage(f"sqlite:///{search_dir}/study.db")
  stage0 = study_lib.load(storage, "test/stage0")
  before = {t.number: t.value for t in stage0.get_trials() if t.state == TrialState.COMPLETE}
  assert 1 <= len(before) < 8
  def learning_rate(trial):  # an enqueued (WAITING) trial holds its point as fixed params
    return trial.params.get("learning_rate",
                            trial.system_attrs.get("fixed_params", {}).get("learning_rate"))

  points = sorted(learning_rate(t) for t in stage0.get_trials()
                  if t.state in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING))
  assert len(points) == 8
  interrupted = sorted(t.number for t in stage0.get_trials() if t.state == TrialState.RUNNING)

  lines = []
  report = master.run_search(config, search_dir, log=lines.append)
  assert "stage 0: continuing" in "\n".join(lines)
  trials = stage0.get_trials()
  complete = [t for t in trials if t.state == TrialState.COMPLETE]
  assert sorted(t.params["learning_rate"] for t in complete) == points  # each point once
  assert {t.number: t.value for t in complete if t.number in before} == before  # kept, not rerun
  retried = [t for t in trials if t.state == TrialState.FAIL]
  assert sorted(t.number for t in retried) == interrupted  # failed, then retried once
  assert all(t.user_attrs["fail_reason"].endswith("exited") for t in retried)
  assert len(trials) == 8 + len(retried)
  assert report.best.value == max(t.value for t in complete)
