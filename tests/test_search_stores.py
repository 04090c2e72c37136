"""One search, a master and 4 workers each in its own process, on PostgreSQL, on the journal store
and on SQLite: every trial recorded once, a SIGKILLed worker's trial failed by the heartbeat (not
the pid: ``pid_check=False``, as for workers on other machines) and retried, and the master's
report identical in content on every store.

Trials are ``research.search.synthetic:train`` (no JAX; an accuracy per learning rate, 0.4 s per
epoch), so these tests measure the bookkeeping, not training.
"""
import csv
import os
import signal

import pytest
from optuna.trial import TrialState

from research.search import results, study as study_lib
from tests.search_helpers import (postgres_server, postgres_url, start_master,  # noqa: F401
                                  synthetic_config, wait_for, write_config)

EPOCH_S = 0.4
GRACE_S = 5.0


def _config(storage):
  # stage 0 spans the divergence cliff (lr > 1 fails), stage 1 narrows around the best two
  return synthetic_config(trials=(8, 4), epochs=(3, 2), epoch_s=EPOCH_S, lr_range=(1e-4, 3.0),
                          storage=storage, num_workers=4, heartbeat_s=0.5, grace_s=GRACE_S,
                          pid_check=False, max_worker_restarts=2)


def _run_search(tmp_path, storage, kill_one=False):
  """Runs the search in a master process; with ``kill_one``, SIGKILLs the worker of a trial
  that has reported its first epoch. Returns (search_dir, store URL, killed trial number)."""
  config = _config(storage)
  search_dir = tmp_path / "search"
  path = write_config(config, tmp_path / "config.json")
  master = start_master(path, search_dir, tmp_path / "master.log")
  url = study_lib.storage_url(storage, str(search_dir))
  killed = None
  if kill_one:
    wait_for(lambda: "local workers started" in (tmp_path / "master.log").read_text(), 90,
             "the master to start its workers")
    storage_ = study_lib.open_storage(url)

    def mid_trial():
      study = study_lib.load(storage_, "test/stage0")
      running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                 if len(t.intermediate_values) == 1 and "worker" in t.user_attrs]
      return running[0] if running else None

    victim = wait_for(mid_trial, 90, "a trial in its second epoch")
    os.kill(int(victim.user_attrs["worker"].rpartition(":")[2]), signal.SIGKILL)
    killed = victim.number
  assert master.wait(timeout=180) == 0, (tmp_path / "master.log").read_text()[-3000:]
  return search_dir, url, killed


def _table_without_numbers(search_dir):
  """The ranked table of results.txt without the trial-number and folder columns (trial numbers
  differ where a trial was retried), and its summary line."""
  lines = (search_dir / "results.txt").read_text().split("\n\n")[0].splitlines()
  head = lines[0].split()
  keep = [i for i, name in enumerate(head) if name not in ("trial", "folder")]
  return [[line.split()[i] for i in keep] for line in lines[:-1]], lines[-1]


def _counts(summary):
  """``(13 trials: COMPLETE 10, FAIL 3)`` -> ``{"trials": 13, "COMPLETE": 10, "FAIL": 3}``."""
  total, _, states = summary.strip("()").partition(" trials: ")
  out = {"trials": int(total)}
  for part in states.split(", "):
    name, count = part.split()
    out[name] = int(count)
  return out


def _csv_rows(search_dir):
  with open(search_dir / results.CSV_FILE) as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sqlite_reference(tmp_path_factory):
  """The same search on SQLite, no worker killed."""
  tmp_path = tmp_path_factory.mktemp("sqlite_reference")
  search_dir, url, _ = _run_search(tmp_path, "")
  return search_dir, url


def _check_search(search_dir, url, killed, reference):
  storage = study_lib.open_storage(url)
  for stage, size in ((0, 8), (1, 4)):
    trials = study_lib.load(storage, f"test/stage{stage}").get_trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # every point exactly once, apart from the killed trial and its retry
    kept = [t for t in trials if t.number != killed or stage != 0]
    assert sorted(t.user_attrs["slot"] for t in kept) == list(range(size))
    for t in kept:
      lr = t.params["learning_rate"]
      assert t.state == (TrialState.FAIL if lr > 1.0 else TrialState.COMPLETE)
      if lr > 1.0:
        assert t.user_attrs["fail_reason"].startswith("diverged: ")
  stage0 = study_lib.load(storage, "test/stage0").get_trials()
  if killed is not None:
    dead = stage0[killed]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["fail_reason"].startswith(
        f"no heartbeat from worker {dead.user_attrs['worker']} for ")
    (retry,) = [t for t in stage0 if t.user_attrs.get("retry_of") == killed]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert retry.user_attrs["slot"] == dead.user_attrs["slot"]
    folders = os.listdir(search_dir / "trials")
    assert f"fail_s0_t{killed:04d}" in folders and not [f for f in folders if "running" in f]
  # the report: the same ranking, values and hyperparameters as on SQLite
  table, summary = _table_without_numbers(search_dir)
  ref_table, ref_summary = _table_without_numbers(reference[0])
  assert table == ref_table
  expected = _counts(ref_summary)
  if killed is not None:  # one more trial: the killed one, failed
    expected["trials"] += 1
    expected["FAIL"] += 1
  assert _counts(summary) == expected
  keys = ("stage", "state", "val_accuracy", "epochs", "learning_rate", "seed")
  rows = {tuple(r[k] for k in keys) for r in _csv_rows(search_dir)
          if not (r["stage"] == "0" and r["trial"] == str(killed))}
  assert rows == {tuple(r[k] for k in keys) for r in _csv_rows(reference[0])}


def test_postgresql_master_and_four_workers_with_a_killed_worker(
    tmp_path, postgres_url, sqlite_reference):  # noqa: F811 (the fixture imported above)
  search_dir, url, killed = _run_search(tmp_path, postgres_url, kill_one=True)
  _check_search(search_dir, url, killed, sqlite_reference)


def test_journal_master_and_four_workers_with_a_killed_worker(tmp_path, sqlite_reference):
  search_dir, url, killed = _run_search(tmp_path, f"journal:{tmp_path}/search.journal",
                                        kill_one=True)
  _check_search(search_dir, url, killed, sqlite_reference)


def test_sqlite_reference_is_complete(sqlite_reference):
  _check_search(*sqlite_reference, None, sqlite_reference)
