"""Claim 25 (``ema``): an exponential running average of the parameters gives a better or equal
validation error than the raw iterate late in training.

Single runs (one per seed), not members: the members trainer records the raw parameters' validation
accuracy only, and "late in training" needs the EMA's accuracy every epoch, which
``train_and_evaluate`` records (``ema/val_accuracy``).
"""
from __future__ import annotations

import os

import numpy as np

from research.playbook import core, engine, figures

TITLE = "EMA parameters are at least as good late in training"
SECTION = "Part 3, Evaluation: model ensembles (running average of parameters)"
STATEMENT = ("A cheap way to get an extra percent or two: keep an exponentially decaying "
             "running average of the weights during training and evaluate with it; it is an "
             "ensemble of the last iterates and almost always achieves better validation error.")
EXPERIMENT = ("research.train.train_and_evaluate of the default digits run (MLP "
              "64-256-256-10, Adam 1e-3, batch 64) with averaging.ema_decay = 0.99 (a ~100-step "
              "window, ~5 epochs); every epoch's record holds the validation accuracy of the raw "
              "and of the EMA parameters. Late = the last third of the epochs; per seed.")
RULE = ("Per seed: mean over the last third of the epochs of (raw validation error - EMA "
        "validation error) > -0.005 (the EMA is better, or equal within half a point).")
SETTINGS = {"tiny": {"seeds": 1, "epochs": 3}, "short": {"seeds": 3, "epochs": 15},
            "full": {"seeds": 5, "epochs": 30}}
DECAY = 0.99


def run(ctx: core.Context) -> core.Outcome:
  s = ctx.settings
  raw = np.zeros((s.seeds, s.epochs))
  ema = np.zeros((s.seeds, s.epochs))
  raw_loss = np.zeros((s.seeds, s.epochs))
  ema_loss = np.zeros((s.seeds, s.epochs))
  for seed in range(s.seeds):
    cfg = engine.config({"averaging.ema_decay": DECAY, "train.num_epochs": s.epochs,
                         "seed": seed})
    history = engine.single(cfg, os.path.join(ctx.workdir, f"seed{seed}")).history
    raw[seed] = 1 - engine.curve(history, "val_accuracy")
    ema[seed] = 1 - engine.curve(history, "ema/val_accuracy")
    raw_loss[seed] = engine.curve(history, "val_loss")
    ema_loss[seed] = engine.curve(history, "ema/val_loss")
  late = slice(s.epochs - max(1, s.epochs // 3), s.epochs)
  gain = (raw[:, late] - ema[:, late]).mean(axis=1)
  conditions = [core.condition("late validation error: raw - EMA", gain, ">", -0.005,
                               hint="while the model still improves, an average over the last "
                               "~5 epochs lags behind the iterate")]
  fig, axes = figures.figure(2, size=(5.2, 4.2))
  epochs = np.arange(1, s.epochs + 1)
  for ax, (r, e, what) in zip(axes[0], ((raw, ema, "validation error"),
                                         (raw_loss, ema_loss, "validation loss"))):
    figures.seed_band(ax, epochs, r, color="tab:gray", label="raw parameters")
    figures.seed_band(ax, epochs, e, color="tab:green", label=f"EMA (decay {DECAY})")
    ax.axvspan(epochs[late][0] - 0.5, epochs[-1] + 0.5, color="0.92", zorder=0, label="late")
    ax.set(yscale="log", xlabel="epoch", ylabel=what, title=f"default digits run: {what}")
    ax.legend(fontsize=8)
  measured = (f"late validation error raw {core.stat(raw[:, late].mean(axis=1))}, EMA "
              f"{core.stat(ema[:, late].mean(axis=1))}; raw - EMA {core.stat(gain)}")
  notes = [f"late validation loss raw {core.stat(raw_loss[:, late].mean(axis=1))}, EMA "
           f"{core.stat(ema_loss[:, late].mean(axis=1))}"]
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"raw_error": raw.tolist(), "ema_error": ema.tolist()}, notes)


CLAIM = core.Claim(25, "ema", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
