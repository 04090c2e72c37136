r"""A fault-injection pass over the training run: real SIGKILLs at random moments, damage on disk.

    python3 scripts/bench/fault_pass.py --kills=12 --workdir=/tmp/fault_pass

1. A reference run of ``scripts/train.py`` (configs/default.py, ``--epochs`` epochs) straight
   through.
2. ``--kills`` runs of the same command, each SIGKILLed at a random moment (uniform over the
   reference's wall time), sometimes twice, then run again to the end. Each is compared with the
   reference: the final checkpoint's parameters and optimizer state bit for bit, every epoch's and
   every batch's record exactly once and equal, only the latest and the best checkpoints kept.
3. The damage table: a finished run is damaged in one way at a time (flipped bytes in a
   checkpoint's data, a missing ``_METADATA``, a missing data file, a missing item, a torn or a
   broken metrics line, a garbage ``config.json``, ``figures/`` a file, ...) and the command is run
   again for more epochs: the outcome is ``resumed`` (finished, equal to an undamaged run where it
   must be), ``one-line error`` (exit 1, one stderr line, no traceback) or ``FAILED`` (anything
   else).

Prints the counts; not a test (it takes minutes), the tests cover each fault on its own
(tests/test_train_faults.py, tests/test_train_processes.py).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from absl import flags

from research import launch

_KILLS = flags.DEFINE_integer("kills", 12, "Runs killed at random moments.")
_EPOCHS = flags.DEFINE_integer("epochs", 6, "Epochs of every run.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/fault_pass", "Where the runs go (emptied first).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill times.")
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train.py")


def _command(workdir: str, epochs: int, keep_latest: int = 1) -> list[str]:
  return [sys.executable, SCRIPT, f"--workdir={workdir}", f"--config.train.num_epochs={epochs}",
          f"--config.checkpoint.keep_latest={keep_latest}", "--config.checkpoint.keep_best=1"]


def _run(workdir: str, epochs: int, kill_after: float | None = None,
         keep_latest: int = 1) -> subprocess.CompletedProcess:
  proc = subprocess.Popen(_command(workdir, epochs, keep_latest), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  if kill_after is not None:
    try:
      proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
      proc.send_signal(signal.SIGKILL)
  out, err = proc.communicate()
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _rows(workdir: str) -> tuple[list[dict], list[dict]]:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))
          if line.strip()]
  return [r for r in rows if "train_loss" in r], [r for r in rows if "batch_loss" in r]


def _final_state(workdir: str, config):
  from research import train
  from research.train import checkpoints
  ckpts = checkpoints.Checkpoints(workdir, create=False)
  try:
    epoch = ckpts.latest_epoch()
    state, _ = ckpts.restore(epoch, train.init_state(train.build_experiment(config)))
  finally:
    ckpts.close()
  return epoch, state


def _same_tree(a, b) -> bool:
  import jax
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _compare(reference: str, other: str, config) -> list[str]:
  """What differs between a killed-and-resumed run and the reference (empty: nothing)."""
  problems = []
  ref_epochs, ref_batches = _rows(reference)
  epochs, batches = _rows(other)
  if [r["epoch"] for r in epochs] != [r["epoch"] for r in ref_epochs]:
    problems.append(f"epoch rows {[r['epoch'] for r in epochs]}")
  elif any(a["train_loss"] != b["train_loss"] or a["val_accuracy"] != b["val_accuracy"]
           for a, b in zip(epochs, ref_epochs)):
    problems.append("epoch records differ")
  if [r["epoch"] for r in batches] != [r["epoch"] for r in ref_batches]:
    problems.append(f"{len(batches)} batch rows for {len(ref_batches)}")
  ref_epoch, ref_state = _final_state(reference, config)
  epoch, state = _final_state(other, config)
  if epoch != ref_epoch or not _same_tree(state.params, ref_state.params) or not _same_tree(
      state.opt_state, ref_state.opt_state):
    problems.append("final state not bit-identical")
  kept = sorted(int(e) for e in os.listdir(os.path.join(other, "checkpoints")))
  best = max(epochs, key=lambda r: (r["val_accuracy"], r["epoch"]))["epoch"] if epochs else None
  if kept != sorted({int(epochs[-1]["epoch"]), int(best)}):
    problems.append(f"checkpoints kept {kept}")
  return problems


def _damages(root: str) -> dict:
  """name -> a function damaging a finished run in ``workdir``."""
  def state_files(workdir):
    top = os.path.join(workdir, "checkpoints", str(_EPOCHS.value), "state")
    return sorted((os.path.join(r, n) for r, _, ns in os.walk(top) for n in ns),
                  key=os.path.getsize)

  def flip(workdir):
    path = state_files(workdir)[-1]
    with open(path, "r+b") as f:
      for offset in (40, 41, 42):
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))

  def write(path, text, mode="w"):
    with open(path, mode) as f:
      f.write(text)

  ckpt = lambda w: os.path.join(w, "checkpoints", str(_EPOCHS.value))
  del root
  return {
      "3 flipped bytes in the latest checkpoint": flip,
      "the latest checkpoint's _METADATA deleted": lambda w: os.remove(
          os.path.join(ckpt(w), "state", "_METADATA")),
      "the latest checkpoint's largest data file deleted": lambda w: os.remove(
          state_files(w)[-1]),
      "the latest checkpoint's meta item deleted": lambda w: shutil.rmtree(
          os.path.join(ckpt(w), "meta")),
      "the latest checkpoint's data file truncated": lambda w: open(state_files(w)[-1],
                                                                    "r+b").truncate(10),
      "the latest checkpoint's SHA256SUMS garbage": lambda w: write(
          os.path.join(ckpt(w), "SHA256SUMS"), "garbage"),
      "a torn last metrics line": lambda w: write(os.path.join(w, "metrics.jsonl"),
                                                  '{"epoch": 6.5, "batch_lo', "a"),
      "a broken metrics line in the middle": lambda w: write(
          os.path.join(w, "metrics.jsonl"),
          "\n".join(["{broken"] + open(os.path.join(w, "metrics.jsonl")).read().splitlines())
          + "\n"),
      "config.json garbage": lambda w: write(os.path.join(w, "config.json"), "garbage"),
      "figures/ is a file": lambda w: (shutil.rmtree(os.path.join(w, "figures")),
                                       write(os.path.join(w, "figures"), "x")),
      "summary.json garbage": lambda w: write(os.path.join(w, "summary.json"), "garbage"),
      "checkpoints/ emptied": lambda w: [shutil.rmtree(os.path.join(w, "checkpoints", e))
                                         for e in os.listdir(os.path.join(w, "checkpoints"))],
      "an empty tmp checkpoint folder left by a kill": lambda w: os.makedirs(os.path.join(
          w, "checkpoints", f"{_EPOCHS.value + 1}.orbax-checkpoint-tmp-123")),
  }


def main() -> int:
  from configs import default
  root = _WORKDIR.value
  shutil.rmtree(root, ignore_errors=True)
  os.makedirs(root)
  config = default.get_config()
  config.train.num_epochs = _EPOCHS.value
  rng = random.Random(_SEED.value)
  reference = os.path.join(root, "reference")
  start = time.perf_counter()
  done = _run(reference, _EPOCHS.value)
  wall = time.perf_counter() - start
  assert done.returncode == 0, done.stderr[-2000:]
  print(f"reference: {_EPOCHS.value} epochs in {wall:.1f} s")
  identical, results = 0, []
  for k in range(_KILLS.value):
    workdir = os.path.join(root, f"killed_{k:02d}")
    kills = [rng.uniform(0.3, 1.0) * wall for _ in range(rng.choice((1, 1, 2)))]
    for moment in kills:
      _run(workdir, _EPOCHS.value, kill_after=moment)
    final = _run(workdir, _EPOCHS.value)
    problems = (["the resumed run failed: " + final.stderr.strip()[-300:]]
                if final.returncode != 0 else _compare(reference, workdir, config))
    identical += not problems
    results.append(problems)
    print(f"kill {k + 1:2d} at {', '.join(f'{m:.1f}' for m in kills)} s: "
          + ("bit-identical, records once, latest + best kept" if not problems else
             "; ".join(problems)), flush=True)
  print(f"\nkills: {identical} of {_KILLS.value} resumed runs bit-identical with records once and "
        "only the latest and best checkpoints kept")
  # The damage table twice for the checkpoint damages: on the reference (its latest checkpoint is
  # its only one when the last epoch is also the best) and on a run keeping the two latest, where
  # the older intact one must be fallen back to.
  two = os.path.join(root, "reference_two_kept")
  assert _run(two, _EPOCHS.value, keep_latest=2).returncode == 0
  cases = [(name, damage, reference, 1) for name, damage in _damages(root).items()]
  cases += [(name + " (2 kept)", damage, two, 2) for name, damage in _damages(root).items()
            if "checkpoint" in name and "tmp" not in name]
  outcomes = {"resumed": 0, "one-line error": 0, "FAILED": 0}
  for name, damage, base, keep_latest in cases:
    workdir = os.path.join(root, "damaged_" + "".join(c if c.isalnum() else "_" for c in name))
    shutil.copytree(base, workdir)
    damage(workdir)
    result = _run(workdir, _EPOCHS.value + 1, keep_latest=keep_latest)
    lines = result.stderr.strip().splitlines()
    if result.returncode == 0:
      outcome = "resumed"
      said = [line.split("] ", 1)[-1] for line in (result.stdout + result.stderr).splitlines()
              if not line.startswith("workdir:")
              and any(word in line for word in ("is damaged", "torn", "falling back",
                                               "figures not written", "not readable"))]
      detail = said[0][:110] if said else "(nothing to say)"
    elif result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr:
      outcome, detail = "one-line error", lines[0][:110]
    else:
      outcome, detail = "FAILED", (lines[-1] if lines else "")[:110]
    outcomes[outcome] += 1
    print(f"  {name:<52} {outcome:<15} {detail}", flush=True)
  print(f"\ndamage: {outcomes}")
  return 0


if __name__ == "__main__":
  launch.run(main)
