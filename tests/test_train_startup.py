"""Start fast: a fixed number of compiled programs whatever the epoch count, the compilation
cache, a finished run said at once, the phases of a run, the embedded digits read directly."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from jax._src import monitoring

from research import data, train
from research.data import sources
from tests.train_helpers import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


def _count_compiles(fn):
  count = [0]

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event == BACKEND_COMPILE:
      count[0] += 1

  monitoring.register_event_duration_secs_listener(listener)
  try:
    fn()
  finally:
    monitoring.unregister_event_duration_listener(listener)
  return count[0]


def test_a_run_compiles_the_same_programs_whatever_its_length(tmp_path):
  dataset = data.load_dataset(small_config().data)
  counts = {}
  for epochs in (1, 2, 5):   # the first run also compiles the process-wide eager ops
    config = small_config(epochs=epochs)
    config.monitor.figures = False
    config.averaging.ema_decay = 0.9
    counts[epochs] = _count_compiles(lambda c=config, e=epochs: train.train_and_evaluate(
        c, str(tmp_path / f"e{e}"), dataset=dataset, log=None))
  assert counts[2] == counts[5], counts
  assert counts[2] <= 8, counts   # per run: init, train step, monitored step, evaluation...


def test_several_steps_per_dispatch_train_the_same_run(tmp_path):
  """config.train.steps_per_call: the steps between two monitored ones run S per dispatch (one
  lax.scan); the updates, their order and the records are those of one step per dispatch."""
  dataset = data.load_dataset(small_config().data)
  results = {}
  for per_call in (1, 3):
    config = small_config(epochs=2)
    config.monitor.figures = False
    config.train.steps_per_call = per_call
    results[per_call] = train.train_and_evaluate(config, str(tmp_path / f"s{per_call}"),
                                                 dataset=dataset, log=None)
  np.testing.assert_allclose(
      np.concatenate([np.ravel(a) for a in jax_leaves(results[3].state.params)]),
      np.concatenate([np.ravel(a) for a in jax_leaves(results[1].state.params)]),
      rtol=1e-5, atol=1e-6)
  for a, b in zip(results[1].history, results[3].history):
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
    assert b["val_accuracy"] == pytest.approx(a["val_accuracy"], abs=1e-9)
  rows = [r for r in map(json.loads, open(tmp_path / "s3" / "metrics.jsonl")) if "batch_loss" in r]
  assert len(rows) == 2 * (1257 // 64)


def jax_leaves(tree):
  import jax
  return jax.tree.leaves(jax.device_get(tree))


def test_the_summary_says_where_the_time_went(tmp_path):
  config = small_config(epochs=1)
  config.monitor.figures = False
  train.train_and_evaluate(config, str(tmp_path), log=None)
  summary = json.load(open(tmp_path / "summary.json"))
  phases = summary["phases_s"]
  assert {"data", "init", "compile", "train", "validate", "checkpoint", "test"} <= set(phases)
  assert sum(phases.values()) == pytest.approx(summary["wall_time_s"], rel=1e-3, abs=1e-2)


def test_digits_are_read_without_importing_scikit_learn():
  code = ("import sys; from research.data import sources; x, y, shape = sources.digits(); "
          "print(x.shape, y.shape, shape, 'sklearn' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60, check=True).stdout.strip()
  assert out == "(1797, 8, 8, 1) (1797,) (8, 8, 1) False"
  from sklearn.datasets import load_digits
  bunch = load_digits()
  x, y, _ = sources.digits()
  np.testing.assert_array_equal(x[..., 0], bunch.images)
  np.testing.assert_array_equal(y, bunch.target)


def _train_script(workdir, *flags, env=None):
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"),
                         f"--workdir={workdir}", "--config.train.num_epochs=1",
                         "--config.data.subset=256", "--noconfig.monitor.figures", *flags],
                        capture_output=True, text=True, timeout=300, cwd=ROOT,
                        env={**os.environ, **(env or {})})


def test_compilation_cache_and_a_finished_run_said_at_once(tmp_path):
  cache = tmp_path / "cache"
  first = _train_script(tmp_path / "run", env={"TRAINLAB_COMPILATION_CACHE": str(cache)})
  assert first.returncode == 0, first.stderr[-2000:]
  assert first.stdout.splitlines()[1].startswith("backend cpu: 1 device")
  assert len(os.listdir(cache)) >= 2   # the train steps and more were cached
  again = _train_script(tmp_path / "run", env={"TRAINLAB_COMPILATION_CACHE": "off"})
  assert again.returncode == 0
  assert again.stdout.startswith(f"{tmp_path / 'run'} holds a finished run of this config "
                                 "(1 epochs: best val accuracy ")
  assert "nothing to train" in again.stdout and "backend" not in again.stdout
  off = _train_script(tmp_path / "other", env={"TRAINLAB_COMPILATION_CACHE": "off",
                                               "XDG_CACHE_HOME": str(tmp_path / "xdg")})
  assert off.returncode == 0 and not (tmp_path / "xdg").exists()


def test_jax_is_not_imported_by_the_launch_path():
  code = "import sys; import research.launch; print('jax' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60, check=True).stdout.strip()
  assert out == "False"
