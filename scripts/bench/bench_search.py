r"""Trials per hour of a search worker on CPU: populations of P = 1, 4, 16 trials in one program.

    python scripts/bench/bench_search.py [--epochs=3] [--sizes=1,4,16] \
        [--config=configs/search_digits.py]

Each row trains P trials (random learning rate, weight decay, momentum, dropout and seed from the
config's search space) for --epochs epochs with ``research.search.population.train_population``,
twice: "cold" includes tracing and compilation (what a fresh worker pays once), "warm" is the
steady state. The reference row is the P = 1 worker path that does not use populations:
``research.train.train_and_evaluate`` per trial (checkpoints, metrics, figures, verdict), warm.
trials/hour = P * 3600 / seconds; "x vs 1" divides by the P = 1 population's warm rate.
"""
from __future__ import annotations

import os
import tempfile
import time

from absl import app, flags, logging

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


from research.launch import default_config, define_config_file  # noqa: E402

_CONFIG = define_config_file(default_config("search_digits.py"),
                             "Search config.")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Epochs per trial.")
_SIZES = flags.DEFINE_string("sizes", "1,4,16", "Population sizes P.")


def _members(config, p: int, seed: int):
  from research.search import space as space_lib, trials
  space = space_lib.Space.from_dict(config.search.space.to_dict())
  # a sane learning-rate band, so that no member diverges and every member trains all epochs
  space = space_lib.Space(tuple(q.with_range(3e-3, 3e-2) if q.name == "learning_rate" else q
                                for q in space.params))
  points = space_lib.sample(space, p, seed=seed)
  paths = {q.name: q.path for q in space.params}
  return [trials.trial_config(config, paths, point, num_epochs=_EPOCHS.value, seed=seed * 100 + i)
          for i, point in enumerate(points)]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from research import train
  from research.search import population
  config = _CONFIG.value
  config.checkpoint.enabled = False
  sizes = [int(s) for s in _SIZES.value.split(",")]
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for p in sizes:
      times = []
      for repeat in range(2):
        start = time.perf_counter()
        result = population.train_population(_members(config, p, repeat))
        times.append(time.perf_counter() - start)
        stopped = [e for e in result.errors if e]
        if stopped:  # a member that stops early would flatter the rate
          print(f"warning: P={p}: {len(stopped)} members diverged: {stopped[0]}")
      rows.append((f"population P={p}", p, times[0], times[1]))
    ref = _members(config, 2, 7)
    for i, member in enumerate(ref):
      start = time.perf_counter()
      train.train_and_evaluate(member, os.path.join(tmp, f"single{i}"), log=None)
      elapsed = time.perf_counter() - start
    rows.append(("train_and_evaluate (P=1 worker)", 1, float("nan"), elapsed))
  base = 3600 * rows[0][1] / rows[0][3]
  print(f"{_EPOCHS.value} epochs per trial, {config.data.name}, model {config.model.name} "
        f"{tuple(config.model.hidden_sizes)}, batch {config.train.batch_size}, "
        f"load average {os.getloadavg()[0]:.1f}")
  print("| run | P | cold s | warm s | trials/hour (warm) | x vs P=1 |")
  print("| --- | --- | --- | --- | --- | --- |")
  for name, p, cold, warm in rows:
    rate = 3600 * p / warm
    print(f"| {name} | {p} | {cold:.2f} | {warm:.2f} | {rate:.0f} | {rate / base:.2f} |")


if __name__ == "__main__":
  app.run(main)
