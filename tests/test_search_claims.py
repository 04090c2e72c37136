"""Search bookkeeping with real processes: atomic claims on every store, idempotent stage
preparation, trials without heartbeat, one master per search, folders of failed trials."""
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import sqlalchemy
from optuna.trial import TrialState

from research.search import master, study as study_lib, trials as trials_lib
from research.search.space import sample
from tests.search_helpers import (ROOT, env, postgres_server, postgres_url,  # noqa: F401
                                  start_master, synthetic_config, wait_for, write_config)

# One claiming process: waits for the start signal (so that all claim at once), then pops
# trials until none is left and writes the numbers it claimed.
CLAIMER = textwrap.dedent("""
    import json, os, sys, time
    import optuna
    from optuna.distributions import FloatDistribution
    from research.search import study as study_lib
    url, out, go = sys.argv[1:4]
    study = optuna.load_study(study_name="claims", storage=study_lib.open_storage(url))
    while not os.path.exists(go):
      time.sleep(0.005)
    got = []
    while (trial := study_lib.pop_trial(study, {"x": FloatDistribution(0.0, 1e6)})) is not None:
      trial.suggest_float("x", 0.0, 1e6)  # as a worker does (recorded by the claim on SQL stores)
      got.append(trial.number)
    with open(out, "w") as f:
      json.dump(got, f)
""")


@contextlib.contextmanager
def _unsynced_sqlite(storage):
  """SQLite writes of ``storage`` without fsync while in the block (no-op for other stores)."""
  backend = study_lib.rdb_backend(storage)
  if backend is None or backend.engine.dialect.name != "sqlite":
    yield
    return

  def unsynced(connection, record):
    connection.execute("PRAGMA synchronous=OFF")

  sqlalchemy.event.listen(backend.engine, "connect", unsynced)
  backend.engine.dispose()
  try:
    yield
  finally:
    sqlalchemy.event.remove(backend.engine, "connect", unsynced)
    backend.engine.dispose()


def _store_url(store, tmp_path, request):
  if store == "postgresql":
    return request.getfixturevalue("postgres_url")
  if store == "journal":
    return f"journal:{tmp_path}/claims.journal"
  return f"sqlite:///{tmp_path}/claims.db"


@pytest.mark.parametrize("store", ["sqlite", "journal", "postgresql"])
def test_four_processes_claim_300_trials_without_duplicates(store, tmp_path, request):
  url = _store_url(store, tmp_path, request)
  storage = study_lib.open_storage(url)
  study = study_lib.create_or_load(storage, "claims")
  with _unsynced_sqlite(storage):  # the set-up only: 300 fsyncs would take seconds
    for i in range(300):
      study.enqueue_trial({"x": float(i)})
  go = tmp_path / "go"
  procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, str(tmp_path / f"claims{i}.json"),
                             str(go)], env=env(), cwd=ROOT) for i in range(4)]
  time.sleep(0.5)
  go.write_text("go")
  assert [p.wait(timeout=240) for p in procs] == [0, 0, 0, 0]
  claims = [json.loads((tmp_path / f"claims{i}.json").read_text()) for i in range(4)]
  counted = collections.Counter(n for got in claims for n in got)
  duplicates = sum(c - 1 for c in counted.values())
  assert duplicates == 0, f"{store}: {duplicates} of 300 trials claimed twice"
  assert sorted(counted) == list(range(300))
  assert sum(1 for got in claims if got) >= 2  # the processes really claimed concurrently
  # every claimed trial is RUNNING, stamped with its claimer, and has a heartbeat from the claim
  trials = study.get_trials()
  assert all(t.state == TrialState.RUNNING for t in trials)
  workers = {t.user_attrs["worker"] for t in trials}
  assert len(workers) == sum(1 for got in claims if got)
  assert all(t.params == {"x": float(t.number)} for t in trials)
  assert study_lib.dead_trials(study, grace_s=60, pid_check=False) == []


@pytest.mark.parametrize("store", ["sqlite", "journal"])
def test_running_trial_without_heartbeat_is_failed_after_grace(store, tmp_path):
  """A worker that dies between claiming a trial and stamping it (the claim alone, through
  Optuna's storage) leaves a RUNNING trial with no heartbeat and no worker: it is failed once it
  has run grace_s, and retried."""
  url = _store_url(store, tmp_path, None)
  storage = study_lib.open_storage(url)
  study = study_lib.create_or_load(storage, "claims")
  study.enqueue_trial({"x": 1.0}, user_attrs={"slot": 0, "seed": 7, "point": {"x": 1.0}})
  (waiting,) = study.get_trials()
  assert storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
  assert study_lib.fail_dead_trials(study, grace_s=30) == []  # within its grace period
  time.sleep(1.2)
  retry = study_lib.RetryStaleTrial(max_retry=1)
  assert study_lib.fail_dead_trials(study, grace_s=1.0, retry=retry) == [0]
  failed, again = study.get_trials()
  assert failed.state == TrialState.FAIL
  assert failed.user_attrs["fail_reason"].startswith("RUNNING for 1s without any heartbeat")
  # the retry: waiting, same point and seed, Optuna's retry bookkeeping
  assert again.state == TrialState.WAITING and again.system_attrs["fixed_params"] == {"x": 1.0}
  assert again.user_attrs == {"slot": 0, "seed": 7, "point": {"x": 1.0}, "retry_of": 0}
  assert again.system_attrs["retry_history"] == [0]


def _sqlite_search(tmp_path, trials):
  config = synthetic_config(trials=(trials,))
  search_dir = str(tmp_path / "search")
  opened = master.open_search(config, search_dir)
  return config, search_dir, opened


def test_stage_preparation_interrupted_mid_enqueue_is_completed_without_duplicates(tmp_path):
  config, _, opened = _sqlite_search(tmp_path, trials=40)
  stage = opened.stages[0]

  def interrupted(study, points, attrs):
    study_lib.enqueue(study, points[:17], attrs[:17])
    raise KeyboardInterrupt  # SIGTERM while the master enqueues

  with pytest.raises(KeyboardInterrupt):
    master.prepare_stage(opened.storage, opened.name, stage, opened.space, config.search, 0,
                         log=lambda _: None, enqueue=interrupted)
  lines = []
  study = master.prepare_stage(opened.storage, opened.name, stage, opened.space, config.search, 0,
                               log=lines.append)
  trials = study.get_trials()
  assert len(trials) == 40
  assert sorted(t.user_attrs["slot"] for t in trials) == list(range(40))
  expected = sample(opened.space, 40, method="random", seed=0)
  assert [t.system_attrs["fixed_params"] for t in sorted(
      trials, key=lambda t: t.user_attrs["slot"])] == expected
  assert lines[0] == "[master] stage 0: enqueueing 23 trials"
  assert "(17 were already enqueued)" in lines[1]
  again = master.prepare_stage(opened.storage, opened.name, stage, opened.space, config.search,
                               0, log=lines.append)
  assert len(again.get_trials()) == 40 and "continuing" in lines[-1]


def test_sigterm_while_the_master_enqueues_then_continue(tmp_path):
  """A real master process stopped by SIGTERM in the middle of enqueueing a stage; the next
  preparation adds only the missing points."""
  config = synthetic_config(trials=(200,))
  search_dir = tmp_path / "search"
  path = write_config(config, tmp_path / "config.json")
  proc = start_master(path, search_dir, tmp_path / "master.log")
  url = f"sqlite:///{search_dir}/study.db"
  # The master says when it starts enqueueing; then the store file grows as trials are added.
  # Its size is watched without opening the database: a reader would wait behind the master's
  # write lock, and SQLite's busy wait lets a writer in a loop starve it.
  wait_for(lambda: "stage 0: enqueueing 200 trials" in (tmp_path / "master.log").read_text(),
           60, "the master to start enqueueing", poll=0.005)
  started = os.path.getsize(search_dir / "study.db")
  wait_for(lambda: os.path.getsize(search_dir / "study.db") > started, 60,
           "the first enqueued trials", poll=0.005)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=60) == 130
  study = study_lib.load(study_lib.open_storage(url), "test/stage0")
  before = len(study.get_trials())
  assert 0 < before < 200, f"{before} trials: the SIGTERM did not land mid-enqueue"
  assert not study.user_attrs.get("enqueued")
  opened = master.open_search(config, str(search_dir))
  lines = []
  with _unsynced_sqlite(opened.storage):
    study = master.prepare_stage(opened.storage, opened.name, opened.stages[0], opened.space,
                                 config.search, 0, log=lines.append)
  slots = [t.user_attrs["slot"] for t in study.get_trials()]
  assert sorted(slots) == list(range(200))
  assert lines[0] == f"[master] stage 0: enqueueing {200 - before} trials"
  assert f"({before} were already enqueued)" in lines[1]


# A master whose SIGTERM arrives inside a store transaction: a SQLAlchemy listener sends it from
# within the argv[3]-th commit of the process (before the database commits), under the handler
# every entry point installs.
MASTER_SIGNALLED_IN_A_COMMIT = textwrap.dedent("""
    import json, os, signal, sys
    import ml_collections, sqlalchemy
    from research.launch import entry
    from research.search import master
    config = ml_collections.ConfigDict(json.load(open(sys.argv[1])))
    signal.signal(signal.SIGTERM, entry._interrupt)
    commits = [0]

    @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "commit")
    def signal_in_commit(connection):
      commits[0] += 1
      if commits[0] == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGTERM)

    try:
      master.run_search(config, sys.argv[2], log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
      sys.exit(130)
""")


@pytest.mark.parametrize("commit", [30, 90])
def test_sigterm_inside_a_store_transaction_stops_the_master_between_two(tmp_path, commit):
  """Before: the interrupt, raised inside the commit, left the transaction open with SQLite's
  write lock; the master's clean-up write (clearing its stamp) then waited 120 s for it (5 of 40
  masters signalled at random moments hung). Now the master stops at the next trial: exit 130 at
  once, its stamp cleared, and the same command continues."""
  config = synthetic_config(trials=(200,))
  search_dir = tmp_path / "search"
  path = write_config(config, tmp_path / "config.json")
  proc = subprocess.run([sys.executable, "-c", MASTER_SIGNALLED_IN_A_COMMIT, path,
                         str(search_dir), str(commit)], capture_output=True, text=True,
                        env=env(), cwd=ROOT, timeout=60)
  assert proc.returncode == 130, proc.stdout + proc.stderr
  assert "enqueueing 200 trials" in proc.stdout and "200 trials x" not in proc.stdout
  storage = study_lib.open_storage(f"sqlite:///{search_dir}/study.db")
  assert study_lib.load(storage, "test").user_attrs["master"] is None  # the clean-up ran
  before = len(study_lib.load(storage, "test/stage0").get_trials())
  assert 0 < before < 200
  opened = master.open_search(config, str(search_dir))
  with _unsynced_sqlite(opened.storage):
    study = master.prepare_stage(opened.storage, opened.name, opened.stages[0], opened.space,
                                 config.search, 0, log=lambda _: None)
  assert sorted(t.user_attrs["slot"] for t in study.get_trials()) == list(range(200))


def test_second_master_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
  config = synthetic_config(trials=(4,), storage=f"journal:{tmp_path}/store.journal")
  path = write_config(config, tmp_path / "config.json")
  search_dir = tmp_path / "search"
  first = start_master(path, search_dir, tmp_path / "first.log")  # no workers: it waits
  wait_for(lambda: "stage 0: 4 trials" in (tmp_path / "first.log").read_text(), 60,
           "the first master to enqueue stage 0")
  holder = f"{os.uname().nodename}:{first.pid}"
  # same search dir: the lock file
  second = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "search.py"),
                           f"--config={path}", f"--search_dir={search_dir}"],
                          capture_output=True, text=True, env=env(), timeout=60)
  assert second.returncode == 1
  assert second.stderr.splitlines() == [
      f"search.py: error: the search dir {search_dir} is in use by the master {holder}; stop that "
      "master first (Ctrl-C; the same command continues the search), or if it is dead on another "
      f"machine, delete {search_dir}/master.lock"]
  # another search dir, same search in the same store: the store's stamp
  third = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "search.py"),
                          f"--config={path}", f"--search_dir={tmp_path / 'other'}"],
                         capture_output=True, text=True, env=env(), timeout=60)
  assert third.returncode == 1
  assert third.stderr.startswith(f"search.py: error: search 'test' in this store is run by the "
                                 f"master {holder} (search dir {search_dir}, last seen ")
  assert third.stderr.count("\n") == 1
  storage = study_lib.open_storage(f"journal:{tmp_path}/store.journal")
  assert len(study_lib.load(storage, "test/stage0").get_trials()) == 4  # nothing enqueued twice
  # the first master dies: its lock and stamp are taken over, the search is finished
  first.send_signal(signal.SIGKILL)
  first.wait(timeout=10)
  fourth = start_master(path, search_dir, tmp_path / "fourth.log",
                        "--config.search.num_workers=2")
  assert fourth.wait(timeout=120) == 0
  log = (tmp_path / "fourth.log").read_text()
  assert f"[master] took over the lock of master {holder}, which no longer runs" in log
  assert "stage 0: continuing" in log
  trials = study_lib.load(storage, "test/stage0").get_trials()
  assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)


def test_running_folders_of_failed_trials_are_renamed_when_the_master_continues(tmp_path):
  config, search_dir, opened = _sqlite_search(tmp_path, trials=3)
  study = master.prepare_stage(opened.storage, opened.name, opened.stages[0], opened.space,
                               config.search, 0, log=lambda _: None)
  trial = study_lib.pop_trial(study)
  workdir = trials_lib.running_dir(search_dir, 0, trial.number)
  os.makedirs(workdir)
  with open(os.path.join(workdir, "trial.json"), "w") as f:
    json.dump({"stage": 0, "number": trial.number, "state": "RUNNING", "seed": 3}, f)
  # failed by an earlier master that died before renaming the folder
  trial.set_user_attr("fail_reason", "worker host:1 exited")
  study.tell(trial, state=TrialState.FAIL)
  renamed = master.clean_running_folders(study, search_dir)
  assert renamed == [os.path.join(search_dir, "trials", f"fail_s0_t{trial.number:04d}")]
  with open(os.path.join(renamed[0], "trial.json")) as f:
    info = json.load(f)
  assert info == {"stage": 0, "number": trial.number, "state": "FAIL", "seed": 3,
                  "fail_reason": "worker host:1 exited"}
  assert master.clean_running_folders(study, search_dir) == []
