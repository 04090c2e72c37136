"""Populations across devices: ``train_members`` splits its members axis over a machine's devices.

On 8 fake CPU devices (a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``)
8 members spread one per device train what the same 8 members on one device train. Not bit for
bit: XLA compiles the vmapped step for 8 members on one device and for 1 member on each device,
and its float32 kernels for the two shapes add in different orders (the same happens between
populations of 1 and 8 on one device); compared at rtol 1e-5 / atol 1e-6, ~10x above the ~1e-7
measured. That this is the only difference is checked exactly: each member on its own device
equals a population of that one member, bit for bit.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from research.train import parallel
from tests.train_helpers import REPO

_SCRIPT = r"""
import json, sys
sys.path.insert(0, {repo!r})
import jax
import numpy as np
from research import data
from research.train import train_members
from tests.train_helpers import small_config

def configs(count):
  out = []
  for i in range(count):
    config = small_config(epochs=2, hidden=(16,))
    config.data.subset = 256
    config.seed = i
    config.optimizer.learning_rate = 0.003 * (1 + i)
    config.model.dropout = 0.1 * (i % 2)     # a rate that differs between members, too
    out.append(config)
  return out

dataset = data.load_dataset(configs(1)[0].data)
spread = train_members(configs(8), dataset=dataset)
alone = train_members(configs(8), dataset=dataset, devices=jax.devices()[:1])
first = train_members(configs(1), dataset=dataset)
leaves = lambda result: [np.asarray(x).tolist() for x in jax.tree.leaves(jax.device_get(
    {{"params": result.state.params, "opt_state": result.state.opt_state}}))]
history = lambda result: [[[r["train_loss"], r["train_accuracy"], r["val_loss"],
                            r["val_accuracy"]] for r in member] for member in result.history]
kernel = spread.state.params["Dense_0"]["kernel"]
print(json.dumps({{
    "devices": len(kernel.sharding.device_set), "alone_devices": len(
        alone.state.params["Dense_0"]["kernel"].sharding.device_set),
    "spread": leaves(spread), "alone": leaves(alone),
    "spread_history": history(spread), "alone_history": history(alone),
    "spread_best": spread.best_val_accuracy.tolist(),
    "alone_best": alone.best_val_accuracy.tolist(),
    "first_member": [np.asarray(x)[0].tolist() for x in jax.tree.leaves(jax.device_get(
        spread.state.params))],
    "population_of_one": [np.asarray(x)[0].tolist() for x in jax.tree.leaves(jax.device_get(
        first.state.params))]}}))
"""


@pytest.fixture(scope="module")
def populations():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", TRAINLAB_COMPILATION_CACHE="off")
  out = subprocess.run([sys.executable, "-c", _SCRIPT.format(repo=REPO)], capture_output=True,
                       text=True, timeout=600, env=env, cwd=REPO)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_members_split_over_eight_devices_train_what_one_device_trains(populations):
  assert (populations["devices"], populations["alone_devices"]) == (8, 1)
  np.testing.assert_allclose(populations["spread_history"], populations["alone_history"],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(populations["spread_best"], populations["alone_best"], atol=1e-6)
  for spread, alone in zip(populations["spread"], populations["alone"]):
    np.testing.assert_allclose(spread, alone, rtol=1e-5, atol=1e-6)


def test_a_member_on_its_own_device_is_a_population_of_one_bit_for_bit(populations):
  for spread, alone in zip(populations["first_member"], populations["population_of_one"]):
    np.testing.assert_array_equal(spread, alone)


@pytest.mark.parametrize("members, devices, used", [
    (8, 8, 8), (16, 8, 8), (6, 8, 6), (12, 8, 6), (7, 8, 7), (9, 8, 3), (5, 1, 1), (1, 8, 1)])
def test_members_go_to_the_most_devices_that_divide_them(members, devices, used):
  assert parallel.member_device_count(members, devices) == used
