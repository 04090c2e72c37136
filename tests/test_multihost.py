"""One run over several processes (jax.distributed), as hosts of a pod slice or a SLURM job would.

Real processes of ``scripts/train.py`` on 127.0.0.1 with gloo CPU collectives, 2 fake CPU devices
each (``XLA_FLAGS=--xla_force_host_platform_device_count=2``):

* 2 processes x 2 devices train what 1 process x 4 devices trains. Not bit for bit: the gradient
  all-reduce of 4 float32 partial sums runs inside XLA:CPU in one process and through gloo's
  algorithm across processes, which adds them in another order (last-bit differences that the
  next steps carry on: after a run the parameters differ by <= 6e-8, the records by <= 1.2e-7).
  Compared at rtol 1e-5 / atol 1e-6: ~10x above what is measured, 10^4 x below one Adam step
  (lr 1e-2). Every other value (the batches each process reads, the dropout keys, evaluation on
  replicated batches) is exact.
* SIGKILL of both processes after epoch 1 and a restart (as SLURM tasks: the processes named by
  srun's environment, which ``jax.distributed.initialize()`` reads, instead of the flags): the
  same result as uninterrupted, bit for bit (the same program on the same processes).
* a process that dies alone: the other stops within the heartbeat timeout with JAX's message
  instead of waiting forever in a collective.
"""
import json
import os
import signal
import subprocess
import sys
import time

import chex
import numpy as np
import orbax.checkpoint as ocp
import pytest

from research.train import distributed, parallel
from tests import multiprocess
from tests.train_helpers import REPO, read_jsonl

EPOCHS = 3
SMALL = ["--config.model.hidden_sizes=(16,)", "--config.data.subset=256",
         "--config.optimizer.learning_rate=0.01", "--config.monitor.every_steps=3",
         "--config.monitor.figures_every_epochs=0", "--noconfig.monitor.figures",
         "--config.model.dropout=0.1", "--config.averaging.ema_decay=0.9"]
DEATH = "Terminating process because the JAX distributed service detected fatal errors"
HEARTBEAT_S = 5


def _start(workdir, cache, processes, *flags, per_process=None, slurm=False):
  """``processes`` processes of scripts/train.py on 2 devices each (1 process: 4 devices), named
  by the process flags, or (``slurm``) by the environment ``srun`` gives its tasks."""
  command = [sys.executable, os.path.join(REPO, "scripts", "train.py"), f"--workdir={workdir}",
             *SMALL, *flags]
  if processes == 1:
    return [multiprocess.popen(command, multiprocess.env(4, cache))]
  port = multiprocess.free_port()
  procs = []
  for p in range(processes):
    env, named = multiprocess.env(2, cache), command + (per_process or {}).get(p, [])
    if slurm:   # what srun sets; JAX's own detection reads it (the port: JAX_COORDINATOR_PORT)
      env.update(SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="localhost",
                 SLURM_NTASKS=str(processes), SLURM_PROCID=str(p), SLURM_LOCALID=str(p),
                 JAX_COORDINATOR_PORT=str(port))
    else:
      named += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}",
                f"--process_id={p}"]
    procs.append(multiprocess.popen(named, env))
  return procs


def _train(workdir, cache, processes, *flags, slurm=False):
  results = multiprocess.wait(_start(workdir, cache, processes, *flags, slurm=slurm))
  for code, stdout, stderr in results:
    assert code == 0, stdout[-2000:] + stderr[-3000:]
  return results


def _final_state(workdir, epoch=EPOCHS):
  return ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(epoch),
                                                         "state"))


def _epoch_rows(workdir):
  rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return [{k: v for k, v in r.items() if k != "time"} for r in rows]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache):
  """The same 3-epoch run on 1 process x 4 devices and on 2 processes x 2 devices."""
  root = tmp_path_factory.mktemp("multihost")
  started = time.perf_counter()
  one = _train(root / "one", cache, 1, f"--config.train.num_epochs={EPOCHS}")
  middle = time.perf_counter()
  two = _train(root / "two", cache, 2, f"--config.train.num_epochs={EPOCHS}")
  print(f"wall: 1 process x 4 devices {middle - started:.1f}s, 2 processes x 2 devices "
        f"{time.perf_counter() - middle:.1f}s")
  return {"one": (root / "one", one), "two": (root / "two", two)}


def test_two_processes_train_what_one_process_trains(runs):
  (one_dir, _), (two_dir, two) = runs["one"], runs["two"]
  (_, main_out, _), (_, other_out, _) = two
  assert "4 devices (cpu:0, cpu:1, cpu:2048, cpu:2049) in 2 processes" in main_out
  assert f"epoch {EPOCHS}/{EPOCHS}" in main_out and "epoch 1/" not in other_out  # one voice
  # Process 0 alone wrote the records: each row once, as the single process wrote them.
  one_rows, two_rows = _epoch_rows(one_dir), _epoch_rows(two_dir)
  assert [sorted(r) for r in two_rows] == [sorted(r) for r in one_rows]
  assert len(os.listdir(two_dir / "tensorboard")) == len(os.listdir(one_dir / "tensorboard"))
  numbers = lambda rows: [v for r in rows for k, v in sorted(r.items())
                          if isinstance(v, (int, float))]
  np.testing.assert_allclose(numbers(two_rows), numbers(one_rows), rtol=1e-5, atol=1e-6)
  a, b = _final_state(one_dir), _final_state(two_dir)
  chex.assert_trees_all_close(b["params"], a["params"], rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(b["averages"], a["averages"], rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_equal(b["rng"], a["rng"])
  one_summary = json.load(open(one_dir / "summary.json"))
  two_summary = json.load(open(two_dir / "summary.json"))
  assert two_summary["num_devices"] == one_summary["num_devices"] == 4
  assert two_summary["status"] == "done" and two_summary["epochs"] == EPOCHS
  assert two_summary["test_accuracy"] == pytest.approx(one_summary["test_accuracy"], abs=1e-6)
  assert os.path.exists(two_dir / "verdict.txt") and os.path.exists(two_dir / "config.json")


def test_both_processes_killed_then_restarted_end_as_uninterrupted(runs, tmp_path, cache):
  workdir = tmp_path / "killed"
  crashed = multiprocess.wait(_start(workdir, cache, 2, f"--config.train.num_epochs={EPOCHS}",
                         "--kill_after_epoch=1"))
  # Process 0 killed itself after epoch 1's checkpoint; process 1 too (or, a moment before its
  # own kill, JAX's runtime stopped it for the dead peer).
  assert crashed[0][0] == -signal.SIGKILL, crashed[0][2][-3000:]
  assert crashed[1][0] in (-signal.SIGKILL, -signal.SIGABRT), crashed[1][2][-3000:]
  assert "epoch 2/" not in crashed[0][1]
  # Restarted as a SLURM job's tasks would be (no process flag: srun's environment names them).
  (_, resumed_out, _), _ = _train(workdir, cache, 2, f"--config.train.num_epochs={EPOCHS}",
                                  slurm=True)
  assert "in 2 processes" in resumed_out
  assert f"resumed from {workdir}/checkpoints/1 (epoch 1 of {EPOCHS} done)" in resumed_out
  straight_dir = runs["two"][0]
  chex.assert_trees_all_equal(_final_state(workdir), _final_state(straight_dir))  # bit for bit
  assert _epoch_rows(workdir) == _epoch_rows(straight_dir)   # each row once, the same values


@pytest.mark.parametrize("dies", [1, 0], ids=["a worker dies", "the coordinator dies"])
def test_a_process_that_dies_alone_stops_the_other_within_the_heartbeat(tmp_path, cache, dies):
  survivor = 1 - dies
  procs = _start(tmp_path / "w", cache, 2, "--config.train.num_epochs=50",
                 f"--heartbeat_timeout_seconds={HEARTBEAT_S}",
                 per_process={dies: ["--kill_after_epoch=1"]})
  procs[dies].wait(timeout=300)
  died = time.perf_counter()
  try:
    procs[survivor].wait(timeout=HEARTBEAT_S + 60)   # JAX's default heartbeat would be 100 s
  except subprocess.TimeoutExpired:
    pass
  waited = time.perf_counter() - died
  (code, stdout, stderr), = multiprocess.wait([procs[survivor]], timeout=1)
  assert procs[dies].returncode == -signal.SIGKILL
  assert code == -signal.SIGABRT, f"not stopped {waited:.0f}s after: {stderr[-2000:]}"
  assert DEATH in stderr and "epoch 50/50" not in stdout
  print(f"process {survivor} stopped {waited:.1f}s after process {dies} died")


# -- in this process: settings, agreement with one process, the rows each process reads ----------

@pytest.mark.parametrize("settings, message", [
    (("10.0.0.2", 2, 0), "--coordinator_address='10.0.0.2' must be host:port of process 0"),
    (("10.0.0.2:99999", 2, 0), "with a port in 1..65535"),
    (("10.0.0.2:1234", 0, 0), "--num_processes=0 must be >= 1."),
    (("10.0.0.2:1234", 2, 2), "--process_id=2 must be below --num_processes=2 (ids run from 0 "
                              "to 1)."),
    ((None, None, -1), "--process_id=-1 must be >= 0"),
])
def test_bad_process_settings_are_named(settings, message):
  with pytest.raises(ValueError) as raised:
    distributed.check_settings(*settings)
  assert message in str(raised.value)


def test_a_bad_process_flag_is_one_line_exit_1_and_writes_nothing(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "train.py"), f"--workdir={tmp_path / 'w'}",
       "--coordinator_address=127.0.0.1:1234", "--num_processes=2", "--process_id=2"],
      capture_output=True, text=True, timeout=120, cwd=tmp_path,
      env=dict(os.environ, TRAINLAB_COMPILATION_CACHE="off"))
  assert result.returncode == 1
  assert result.stderr == ("train.py: error: --process_id=2 must be below --num_processes=2 (ids "
                           "run from 0 to 1).\n")
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("tasks, found", [("2", "slurm"), ("1", None)])
def test_a_slurm_step_of_several_tasks_is_detected(monkeypatch, tasks, found):
  for name in ("OMPI_MCA_orte_hnp_uri", "JAX_COORDINATOR_ADDRESS"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("SLURM_JOB_ID", "4242")
  monkeypatch.setenv("SLURM_STEP_NODELIST", "node[001-002]")
  monkeypatch.setenv("SLURM_NTASKS", tasks)
  monkeypatch.setenv("SLURM_PROCID", "0")
  monkeypatch.setenv("SLURM_LOCALID", "0")
  assert distributed.detected_cluster() == found


def test_one_process_agrees_with_itself_and_reads_whole_batches():
  assert distributed.agreed({"a": [1.5, None]}) == {"a": [1.5, None]}
  assert distributed.decide(lambda x: x + 1, 1) == 2
  def refuse():
    raise ValueError("bad")
  with pytest.raises(ValueError, match="bad"):
    distributed.decide(refuse)
  assert distributed.is_main() and not distributed.initialize()   # nothing to join here
  assert parallel.DataParallel().local_rows(64) == slice(0, 64)


@pytest.mark.parametrize("script", ["optim_demo.py", "search.py"])
def test_a_one_process_script_started_as_several_slurm_tasks_refuses_in_one_line(tmp_path,
                                                                                   script):
  """N copies of a one-process script would write the same files at once: each says so."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "OMPI_")) and k != "JAX_COORDINATOR_ADDRESS"}
  env.update(SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="node[001-002]", SLURM_NTASKS="2",
             SLURM_PROCID="0", SLURM_LOCALID="0", TRAINLAB_COMPILATION_CACHE="off")
  result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", script)]
                          + ([f"--search_dir={tmp_path / 's'}"] if script == "search.py" else []),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
  assert result.returncode == 1
  assert result.stderr == (
      f"{script}: error: this script runs in one process, but it was started as one of several "
      "processes of a slurm job; start it as a single task (e.g. srun --ntasks=1); the scripts "
      "that train (train, ablate, ensemble, sanity, gradcheck, second_order, reproduce) run on "
      "several processes (hosts)\n")
  assert os.listdir(tmp_path) == []


def test_search_workers_started_as_several_slurm_tasks_each_run(tmp_path):
  """Workers are meant to run side by side (srun --ntasks=8: eight workers on one store): not
  refused as a cluster job; this one goes on to its own checks (here: a store that is absent)."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "OMPI_")) and k != "JAX_COORDINATOR_ADDRESS"}
  env.update(SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="node[001-002]", SLURM_NTASKS="2",
             SLURM_PROCID="1", SLURM_LOCALID="0", TRAINLAB_COMPILATION_CACHE="off")
  result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "search_worker.py"),
                           f"--storage=sqlite:///{tmp_path}/absent.db", "--search=s"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
  assert result.returncode == 1
  assert result.stderr.startswith(f"search_worker.py: error: storage 'sqlite:///{tmp_path}/"
                                  "absent.db': the SQLite file")
