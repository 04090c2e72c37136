r"""Where the wall time of the default run goes: imports, data, init, compile, training, figures.

    python3 scripts/bench/bench_startup.py --repeats=3

Runs the README's main command (``python3 scripts/train.py``, configs/default.py, 30 epochs) as a
fresh process ``--repeats`` times in each of two settings, interleaved: ``cold`` (an empty
compilation cache: the first run on a machine) and ``warm`` (the cache of the previous run: every
later run). Prints, per setting, the median (min-max) of every phase of ``summary.json``'s
``phases_s``, the shell-measured wall time, the time to the first trained epoch and the best
validation accuracy. Not a test: the numbers depend on the machine and its load (``uptime`` is
printed with them).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import flags

from research import launch

_REPEATS = flags.DEFINE_integer("repeats", 3, "Runs per setting.")
_EPOCHS = flags.DEFINE_integer("epochs", 30, "config.train.num_epochs of each run.")
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train.py")
PHASES = ("import", "data", "init", "compile", "train", "validate", "checkpoint", "test",
          "figures", "other")


def _run(workdir: str, cache: str) -> dict:
  start = time.perf_counter()
  first_epoch = None
  env = {**os.environ, launch.entry.COMPILATION_CACHE_ENV: cache}
  command = [sys.executable, SCRIPT, f"--workdir={workdir}",
             f"--config.train.num_epochs={_EPOCHS.value}"]
  with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        env=env) as proc:
    for line in proc.stdout:
      if first_epoch is None and re.match(r"epoch +1/", line):
        first_epoch = time.perf_counter() - start
  wall = time.perf_counter() - start
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}")
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  return {**summary["phases_s"], "wall (shell)": wall, "first epoch done": first_epoch,
          "best val acc": summary["best_val_accuracy"]}


def _row(name: str, values: list[float]) -> str:
  v = np.asarray(values, float)
  return f"  {name:<18} {np.median(v):8.2f}  ({v.min():.2f}-{v.max():.2f})"


def main() -> int:
  root = tempfile.mkdtemp(prefix="bench_startup_")
  results: dict[str, list[dict]] = {"cold": [], "warm": []}
  try:
    warm_cache = os.path.join(root, "warm_cache")
    _run(os.path.join(root, "prime"), warm_cache)   # fills the warm cache
    for i in range(_REPEATS.value):
      for setting in ("cold", "warm"):
        cache = os.path.join(root, f"cold_cache_{i}") if setting == "cold" else warm_cache
        results[setting].append(_run(os.path.join(root, f"{setting}_{i}"), cache))
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(f"default run ({_EPOCHS.value} epochs), {_REPEATS.value} runs per setting; load: "
        f"{os.getloadavg()}")
  for setting, runs in results.items():
    print(f"{setting} compilation cache: seconds, median (min-max)")
    for key in PHASES + ("wall (shell)", "first epoch done", "best val acc"):
      values = [r.get(key, 0.0) for r in runs]
      print(_row(key, values))
  return 0


if __name__ == "__main__":
  launch.run(main)
