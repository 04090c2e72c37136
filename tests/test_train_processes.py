"""Training in subprocesses: resume after SIGKILL is bit-exact; 8 CPU devices equal 1 device."""
import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from research import data, models, optim, train
from tests.train_helpers import REPO, small_config

SMALL = ["--config.model.hidden_sizes=(32,)", "--config.optimizer.learning_rate=0.01",
         "--config.monitor.every_steps=7", "--config.monitor.figures_every_epochs=0",
         "--config.model.dropout=0.1", "--config.averaging.ema_decay=0.9"]


def _train(workdir, *flags, env=None):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "train.py"), f"--workdir={workdir}",
       *SMALL, *flags], capture_output=True, text=True, timeout=600, env=env, cwd="/")


def _final_state(workdir, epochs):
  config = small_config(epochs)
  config.model.dropout = 0.1
  config.averaging.ema_decay = 0.9
  dataset = data.load_dataset(config.data)
  model = models.create_model(config.model, dataset.num_classes, dataset.image_shape)
  tx = optim.get_optimizer(config.optimizer, len(dataset.x_train) // 64)
  target = train.create_train_state(config, model, tx, jax.random.PRNGKey(0), dataset)
  ckpts = train.checkpoints.Checkpoints(str(workdir), create=False)
  assert ckpts.latest_epoch() == epochs
  state, _ = ckpts.restore(epochs, target)
  return jax.device_get(state)


def test_resume_after_kill_is_bit_exact(tmp_path):
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  done = _train(straight, "--config.train.num_epochs=3")
  assert done.returncode == 0, done.stderr[-3000:]
  crash = _train(killed, "--config.train.num_epochs=3", "--kill_after_epoch=1")
  assert crash.returncode == -9, crash.stderr[-3000:]
  assert "epoch 2/3" not in crash.stdout
  resumed = _train(killed, "--config.train.num_epochs=3")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from" in resumed.stdout and "epoch 1 of 3 done" in resumed.stdout
  a, b = _final_state(straight, 3), _final_state(killed, 3)
  chex.assert_trees_all_equal(a.params, b.params)            # bit for bit
  chex.assert_trees_all_equal(a.opt_state, b.opt_state)
  chex.assert_trees_all_equal(a.averages, b.averages)
  # The metrics file holds each epoch once (rows of the killed epochs are not duplicated).
  rows = [json.loads(line) for line in open(killed / "metrics.jsonl") if line.strip()]
  assert [r["epoch"] for r in rows if "val_accuracy" in r] == [1.0, 2.0, 3.0]


_DEVICES_SCRIPT = r"""
import json, sys
sys.path.insert(0, {repo!r})
import jax
from tests.train_helpers import small_config
from research import train
config = small_config(epochs=1)
config.model.dropout = 0.1
config.checkpoint.enabled = False
config.train.steps_per_call = {per_call}
result = train.train_and_evaluate(config, {workdir!r}, log=None)
print(json.dumps({{"devices": jax.device_count(),
                   "history": [[r["train_loss"], r["val_loss"], r["val_accuracy"]]
                               for r in result.history],
                   "kernel": jax.device_get(result.state.params["Dense_0"]["kernel"]).tolist()}}))
"""


def _run_on_devices(count, workdir, per_call=1):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={count}",
             JAX_PLATFORMS="cpu")
  code = _DEVICES_SCRIPT.format(repo=REPO, workdir=str(workdir), per_call=per_call)
  out = subprocess.run([sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_eight_cpu_devices_match_one(tmp_path):
  """8 devices (with 4 steps per dispatch: the scanned steps split their batches over the
  devices too) give the losses of 1."""
  one = _run_on_devices(1, tmp_path / "one")
  eight = _run_on_devices(8, tmp_path / "eight", per_call=4)
  assert (one["devices"], eight["devices"]) == (1, 8)
  np.testing.assert_allclose(eight["history"], one["history"], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(eight["kernel"], one["kernel"], rtol=1e-3, atol=1e-5)


def test_batch_size_must_split_over_devices():
  parallel = train.DataParallel(jax.local_devices() * 1)
  parallel.check_batch_size(64)
  three = train.DataParallel.__new__(train.DataParallel)
  three.devices = [None] * 3
  with pytest.raises(ValueError, match="batch_size=64 must be a multiple of the 3 devices"):
    three.check_batch_size(64)
