"""Claim 9 (``batch_noise``): the loss 'wiggle' shrinks as the batch grows; full batch is
monotone.

Single runs, not members: the batch size changes the shape of every step (members share it), and
the per-update losses are the training loop's ``batch_loss`` rows.
"""
from __future__ import annotations

import math
import os

import jax
import numpy as np

from research.playbook import core, engine, figures

TITLE = "The loss wiggle shrinks with the batch size"
SECTION = "Part 3, Babysitting the learning process (loss function)"
STATEMENT = ("The amount of 'wiggle' in the loss is related to the batch size: when the batch "
             "size is 1 the wiggle is relatively high; when it is the full dataset the wiggle is "
             "minimal, because every gradient update should improve the loss monotonically "
             "(unless the learning rate is set too high).")
EXPERIMENT = ("research.train.train_and_evaluate on digits (MLP 64-100-10, He, plain SGD, "
              "lr 0.05) with batch sizes 8, 32, 128 and the whole training set (1257), the same "
              "number of updates each (`updates`), per seed; the per-update losses come from the "
              "run's metrics.jsonl (batch_loss rows). Wiggle = the median over windows of 20 "
              "updates of the standard deviation of ln(loss) around the window's own straight "
              "line (the monitor's noise measure, on windows of updates instead of epochs).")
RULE = ("Per seed: log10(wiggle at batch b / wiggle at the next larger batch) > 0 for "
        "8 -> 32, 32 -> 128 and 128 -> full; and the full-batch loss rises at no update (number "
        "of rises < 0.5).")
SETTINGS = {"tiny": {"seeds": 1, "updates": 40, "batches": (8, "full")},
            "short": {"seeds": 2, "updates": 100, "batches": (8, 32, 128, "full")},
            "full": {"seeds": 3, "updates": 300, "batches": (8, 32, 128, "full")}}
WINDOW = 20
LEARNING_RATE = 0.05


def wiggle(losses: np.ndarray, window: int = WINDOW) -> float:
  """Median over windows of std(ln loss - its window's least-squares line)."""
  logs = np.log(np.maximum(losses, 1e-12))
  scatter = []
  for start in range(0, logs.size - window + 1, window):
    y = logs[start:start + window]
    x = np.arange(window, dtype=np.float64)
    scatter.append(float(np.std(y - np.polyval(np.polyfit(x, y, 1), x))))
  return float(np.median(scatter))


def batch_losses(workdir: str) -> np.ndarray:
  from research import monitor
  rows = [r for r in monitor.read_metrics(workdir) if "batch_loss" in r]
  return np.array([r["batch_loss"] for r in sorted(rows, key=lambda r: r["epoch"])])


def run(ctx: core.Context) -> core.Outcome:
  s = ctx.settings
  n_train = len(engine.dataset(engine.config()).x_train)
  # The full batch splits evenly over the devices of a data-parallel run (all of it on one).
  full = n_train - n_train % jax.device_count()
  batches = tuple(full if b == "full" else b for b in s.batches)
  curves = np.zeros((s.seeds, len(batches), s.updates))
  for seed in range(s.seeds):
    for j, batch in enumerate(batches):
      epochs = math.ceil(s.updates / (n_train // batch))
      cfg = engine.config({"model.hidden_sizes": (100,), "optimizer.name": "sgd",
                           "optimizer.learning_rate": LEARNING_RATE, "train.batch_size": batch,
                           "train.num_epochs": epochs, "seed": seed})
      workdir = os.path.join(ctx.workdir, f"batch{batch}_seed{seed}")
      engine.single(cfg, workdir)
      curves[seed, j] = batch_losses(workdir)[:s.updates]
  noise = np.array([[wiggle(curves[k, j]) for j in range(len(batches))]
                    for k in range(s.seeds)])
  rises = np.array([np.sum(np.diff(curves[k, -1]) > 0) for k in range(s.seeds)])
  names = [str(b) for b in batches[:-1]] + ["full"]
  conditions = [core.condition(f"log10(wiggle at batch {names[j]} / at {names[j + 1]})",
                               np.log10(noise[:, j] / noise[:, j + 1]), ">", 0.0)
                for j in range(len(batches) - 1)]
  conditions.append(core.condition("loss rises of the full-batch run", rises, "<", 0.5,
                                   hint="a learning rate too high for gradient descent"))
  fig, axes = figures.figure(2, size=(5.6, 4.4))
  ax = axes[0, 0]
  updates = np.arange(1, s.updates + 1)
  for j, name in enumerate(names):
    ax.plot(updates, curves[0, j], linewidth=1, label=f"batch {name}")
  ax.set(yscale="log", xlabel="update", ylabel="training loss of the update's batch",
         title=f"plain SGD, lr {LEARNING_RATE:g}, seed 0")
  ax.legend(fontsize=8)
  ax = axes[0, 1]
  for k in range(s.seeds):
    ax.plot(batches, noise[k], "o-", color="tab:blue", alpha=0.6)
  ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="wiggle (std of ln loss "
         f"around the trend, {WINDOW}-update windows)", title="wiggle vs batch size, per seed")
  figures.note(ax, [f"full batch: {core.stat(rises)} rises", *(
      f"batch {n}: {core.stat(noise[:, j])}" for j, n in enumerate(names))])
  measured = (f"wiggle {core.stats(zip((f'batch {n}' for n in names), noise.T))}; full-batch "
              f"loss rises {core.stat(rises)} times")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"batches": list(batches), "wiggle": noise.tolist(),
                       "full_batch_rises": rises.tolist()})


CLAIM = core.Claim(9, "batch_noise", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
