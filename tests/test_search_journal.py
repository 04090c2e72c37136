"""The journal store's lock and the master's stall rule, with real processes.

CI caught the failure these guard against: a worker SIGKILLed while appending to the journal left
Optuna's symlink lock behind, every process waited 30 s for it, and the master, whose reads take
no lock, failed the three live trials whose heartbeats could not land (each then ran twice).
"""
import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time

from optuna.storages.journal import JournalFileSymlinkLock
from optuna.trial import TrialState

from research.search import journal, master, study as study_lib
from tests.search_helpers import ROOT, env, synthetic_config

# Holds the lock the store itself takes for argv[1]'s journal, for argv[2] seconds (3600: until
# killed).
HOLDER = textwrap.dedent("""
    import sys, time
    from research.search.journal import journal_backend
    lock = journal_backend(sys.argv[1])._lock
    lock.acquire()
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    lock.release()
""")


def _hold_lock(path, seconds) -> subprocess.Popen:
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
  assert holder.stdout.readline().strip() == "held"
  return holder


def test_a_process_killed_holding_the_lock_leaves_the_store_writable(tmp_path):
  url = f"journal:{tmp_path}/s.journal"
  study = study_lib.create_or_load(study_lib.open_storage(url), "s")
  holder = _hold_lock(tmp_path / "s.journal", 3600)
  writer = threading.Thread(target=study.set_user_attr, args=("x", 1))
  writer.start()
  writer.join(timeout=1.0)
  assert writer.is_alive()  # the lock excludes: the append waits for the holder
  holder.send_signal(signal.SIGKILL)
  holder.wait(timeout=10)
  # the kernel dropped the dead holder's lock: the append goes through at once, not after
  # Optuna's 30 s grace period for a lock file left behind
  writer.join(timeout=10)
  assert not writer.is_alive()
  reopened = study_lib.load(study_lib.open_storage(url), "s")
  assert reopened.user_attrs["x"] == 1
  assert not os.path.lexists(f"{tmp_path}/s.journal.lock")  # no Optuna lock file was made
  assert os.path.exists(f"{tmp_path}/s.journal{journal.LOCK_SUFFIX}")


def test_two_threads_of_one_process_exclude_each_other(tmp_path):
  lock = journal.FlockLock(str(tmp_path / "s.journal"))
  lock.acquire()
  order = []

  def second():
    lock.acquire()
    order.append("second")
    lock.release()

  thread = threading.Thread(target=second)
  thread.start()
  thread.join(timeout=0.5)
  assert thread.is_alive() and order == []
  order.append("first")
  lock.release()
  thread.join(timeout=10)
  assert order == ["first", "second"]


def test_a_journal_storage_pickles_to_another_process_without_its_lock(tmp_path):
  storage = study_lib.open_storage(f"journal:{tmp_path}/s.journal")
  storage._backend._lock.acquire()
  copy = pickle.loads(pickle.dumps(storage))
  storage._backend._lock.release()
  study_lib.create_or_load(copy, "s").set_user_attr("x", 2)
  assert study_lib.load(storage, "s").user_attrs["x"] == 2


def test_release_without_acquire_is_an_error(tmp_path):
  lock = journal.FlockLock(str(tmp_path / "s.journal"))
  try:
    lock.release()
  except RuntimeError as err:
    assert "released without being held" in str(err)
  else:
    raise AssertionError("release without acquire passed")


def test_without_flock_optunas_symlink_lock_is_used(tmp_path, monkeypatch):
  path = str(tmp_path / "s.journal")
  assert isinstance(journal.journal_backend(path)._lock, journal.FlockLock)

  def no_flock(fd, operation):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(journal.fcntl, "flock", no_flock)
  assert not journal.has_flock(path)
  assert isinstance(journal.journal_backend(path)._lock, JournalFileSymlinkLock)


def test_a_stale_heartbeat_is_no_verdict_until_the_store_was_watched_for_grace_s():
  trial = type("T", (), {"user_attrs": {"worker": "elsewhere:1"}, "datetime_start": None})()
  assert study_lib.is_dead(trial, grace_s=5, heartbeat_age_s=60, watched_s=None)
  assert study_lib.is_dead(trial, grace_s=5, heartbeat_age_s=60, watched_s=4.9) is None
  assert study_lib.is_dead(trial, grace_s=5, heartbeat_age_s=60, watched_s=5.1)
  assert study_lib.is_dead(trial, grace_s=5, heartbeat_age_s=1, watched_s=60) is None


def test_the_master_does_not_fail_live_trials_while_the_store_is_stalled(tmp_path):
  """The journal's lock is held 3 s (a stalled store) past a live trial's grace of 2 s: its
  worker beats 0.5 s after the stall and finishes; the master, whose first look comes right
  after the stall, must not fail it (without the stall rule it does: that look sees a 3 s old
  heartbeat)."""
  url = f"journal:{tmp_path}/s.journal"
  config = synthetic_config(storage=url, heartbeat_s=0.5, grace_s=2.0, pid_check=False,
                            max_retries=0)  # a wrongly failed trial ends the watch at once
  storage = study_lib.open_storage(url)
  study = study_lib.create_or_load(storage, "test/stage0")
  study.enqueue_trial({"learning_rate": 0.01}, user_attrs={"slot": 0})
  trial = study_lib.pop_trial(study)  # stamps its first heartbeat
  holder = _hold_lock(tmp_path / "s.journal", 3.0)

  def live_worker():  # another process's view of the store
    store = study_lib.open_storage(url)
    holder.wait(timeout=30)
    time.sleep(0.5)
    study_lib.record_heartbeat(store, trial._trial_id)
    time.sleep(0.5)
    store.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [0.5])

  worker = threading.Thread(target=live_worker)
  worker.start()
  lines = []
  master.watch_stage(study, None, config.search, lines.append, poll_s=0.1,
                     on_poll=journal.lock_probe(url))
  worker.join(timeout=30)
  (final,) = study.get_trials()
  assert final.state == TrialState.COMPLETE and "fail_reason" not in final.user_attrs
  assert [line for line in lines if "the store stalled for" in line]
