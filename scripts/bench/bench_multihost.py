r"""What several processes and several devices cost and give, on this machine.

    python3 scripts/bench/bench_multihost.py --repeats=3

* ``processes``: the wall time of one ``scripts/train.py`` run (digits, 3 epochs, a small MLP) as
  1 process x 4 CPU devices and as 2 processes x 2 CPU devices (``--num_processes=2`` on
  127.0.0.1, gloo collectives), interleaved, each with a fresh compilation cache: what the
  multi-process test pays per run. On one machine 2 processes are no faster (same cores, plus the
  coordinator and gloo over TCP); on hosts with their own accelerators each adds its devices.
* ``members``: member-epochs trained per second by ``train_members`` with the members on 1
  device and split over 8 fake CPU devices (``MembersParallel``): the members over the median
  time of an epoch after the first (which compiles), interleaved.

Medians (min-max) over ``--repeats``; not a test: the numbers depend on the machine and its load
(``uptime`` is printed with them).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

from research import launch

_REPEATS = flags.DEFINE_integer("repeats", 3, "Measurements per setting.")
_EPOCHS = flags.DEFINE_integer("epochs", 5, "Timed epochs of each members measurement.")
_MEMBERS = flags.DEFINE_integer("members", 8, "Population size of the members measurement.")
_SECTIONS = flags.DEFINE_list("sections", ["processes", "members"], "What to measure.")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(REPO, "scripts", "train.py")
SMALL = ["--config.model.hidden_sizes=(32,)", "--config.train.num_epochs=3",
         "--noconfig.monitor.figures", "--config.monitor.figures_every_epochs=0"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train(processes: int, root: str) -> float:
  """Wall seconds of one run on ``processes`` processes (4 CPU devices in all)."""
  workdir, cache = tempfile.mkdtemp(dir=root), tempfile.mkdtemp(dir=root)
  devices = 4 // processes
  env = {**os.environ, "JAX_PLATFORMS": "cpu", launch.entry.COMPILATION_CACHE_ENV: cache,
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  command = [sys.executable, TRAIN, f"--workdir={workdir}", *SMALL]
  if processes > 1:
    command.append(f"--coordinator_address=127.0.0.1:{_free_port()}")
    command.append(f"--num_processes={processes}")
  start = time.perf_counter()
  procs = [subprocess.Popen(command + ([f"--process_id={p}"] if processes > 1 else []), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
           for p in range(processes)]
  codes = [proc.wait() for proc in procs]
  if any(codes):
    raise RuntimeError(f"{' '.join(command)} exited with {codes}")
  return time.perf_counter() - start


_MEMBERS_SCRIPT = r"""
import json
import jax
from research import data
from research.train import train_members
from tests.train_helpers import small_config

def configs(epochs):
  out = []
  for i in range({members}):
    config = small_config(epochs=epochs)
    config.seed, config.optimizer.learning_rate = i, 0.001 * (1 + i)
    out.append(config)
  return out

dataset = data.load_dataset(configs(1)[0].data)
times = {{"1 device": [], "8 devices": []}}
for _ in range({repeats}):
  for name, devices in (("1 device", jax.devices()[:1]), ("8 devices", None)):
    result = train_members(configs(1 + {epochs}), dataset=dataset, devices=devices)
    epoch_s = sorted(record["time"] for record in result.history[0][1:])
    times[name].append({members} / epoch_s[len(epoch_s) // 2])
print(json.dumps(times))
"""


def _members() -> dict[str, list[float]]:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", launch.entry.COMPILATION_CACHE_ENV: "off",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  script = _MEMBERS_SCRIPT.format(members=_MEMBERS.value, repeats=_REPEATS.value,
                                  epochs=_EPOCHS.value)
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                       cwd=REPO, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _row(name: str, values: list[float], unit: str) -> str:
  v = np.asarray(values, float)
  return f"  {name:<28} {np.median(v):8.2f} {unit}  ({v.min():.2f}-{v.max():.2f})"


def main() -> None:
  print(f"machine: {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}", flush=True)
  if "processes" in _SECTIONS.value:
    walls: dict[str, list[float]] = {"1 process x 4 devices": [], "2 processes x 2 devices": []}
    with tempfile.TemporaryDirectory() as root:
      for _ in range(_REPEATS.value):
        for processes, name in ((1, "1 process x 4 devices"), (2, "2 processes x 2 devices")):
          walls[name].append(_train(processes, root))
    print("processes: wall time of scripts/train.py, digits, 3 epochs, fresh compilation cache")
    for name, values in walls.items():
      print(_row(name, values, "s"))
    ratio = (np.median(walls["2 processes x 2 devices"])
             / np.median(walls["1 process x 4 devices"]))
    print(f"  ratio 2 processes / 1 process: {ratio:.2f}", flush=True)
  if "members" in _SECTIONS.value:
    members = _members()
    print(f"members: {_MEMBERS.value} members, member-epochs trained per second, digits MLP "
          "(32 hidden units), epochs after the first")
    for name, values in members.items():
      print(_row(name, values, "/s"))
    print(f"  ratio 8 devices / 1 device: "
          f"{np.median(members['8 devices']) / np.median(members['1 device']):.2f}")
  print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  launch.run(main)
