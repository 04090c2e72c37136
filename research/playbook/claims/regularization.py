"""Claim 11 (``regularization``): without regularization the train/val gap grows; L2 and
dropout shrink it (overfitting a small training set)."""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

TITLE = "The train/val gap grows, L2 and dropout shrink it"
SECTION = "Part 3, Babysitting (train/val accuracy); Part 2, Regularization"
STATEMENT = ("The gap between the training and validation accuracy indicates the amount of "
             "overfitting: a large, growing gap means strong overfitting, and the answer is to "
             "increase regularization (stronger L2 weight penalty, more dropout) or collect more "
             "data.")
EXPERIMENT = ("research.train.train_members on a 300-example digits training subset (default "
              "MLP 64-256-256-10, He, Adam 1e-3, batch 50): three variants per seed - no "
              "regularization, L2 1e-2 (loss.l2), dropout 0.5 (model.dropout) - trained as one "
              "program. After every epoch the members' parameters are evaluated in test mode on "
              "the 300 training examples and on the validation split (on_snapshot); gap = train "
              "accuracy - validation accuracy, mean of the last 3 epochs.")
RULE = ("Per seed: the unregularized gap grows (final gap - gap after epoch 1 > 0); L2 shrinks "
        "it (unregularized final gap - L2 final gap > 0); dropout shrinks it (unregularized - "
        "dropout > 0).")
SETTINGS = {"tiny": {"seeds": 1, "epochs": 3}, "short": {"seeds": 2, "epochs": 40},
            "full": {"seeds": 3, "epochs": 100}}
VARIANTS = {"none": {}, "L2 1e-2": {"loss.l2": 1e-2}, "dropout 0.5": {"model.dropout": 0.5}}


def run(ctx: core.Context) -> core.Outcome:
  from research.train import evaluate, make_members_eval_step
  s = ctx.settings
  base = engine.config({"data.subset": 300, "train.batch_size": 50,
                        "train.num_epochs": s.epochs})
  names = list(VARIANTS)
  data = engine.dataset(base)
  # Dropout is identity in test mode: a model without dropout layers evaluates every member.
  eval_step = make_members_eval_step(engine.experiment(base).model)
  accuracy = {"train": [], "val": []}    # per epoch, (K,) each

  def on_snapshot(epoch, variables, info):
    del epoch, info
    for split, x, y in (("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val)):
      accuracy[split].append(evaluate(eval_step, variables["params"], variables["batch_stats"],
                                      x, y, 512)["accuracy"])

  runs = engine.sweep(base, list(VARIANTS.values()), s.seeds, on_snapshot=on_snapshot)
  train, val = (runs.split(np.transpose(accuracy[split])) for split in ("train", "val"))
  gap = train - val
  final = gap[:, :, -3:].mean(axis=2)
  conditions = [
      core.condition("unregularized gap: final - after epoch 1", final[:, 0] - gap[:, 0, 0],
                     ">", 0.0, hint="the gap opens within the first epoch (6 updates) and then "
                     "holds at ~5 points: 300 digits still generalize well"),
      core.condition("final gap: none - L2 1e-2", final[:, 0] - final[:, 1], ">", 0.0,
                     hint="with Adam an L2 gradient is divided by the same running RMS as the "
                     "data gradient, so it acts far more weakly than plain L2 (AdamW's point)"),
      core.condition("final gap: none - dropout 0.5", final[:, 0] - final[:, 2], ">", 0.0,
                     hint="the unregularized gap is already small (~5 points)"),
  ]
  fig, axes = figures.figure(2, size=(5.6, 4.4))
  epochs = np.arange(1, gap.shape[2] + 1)
  colors = ("tab:red", "tab:blue", "tab:green")
  figures.bands(axes[0, 0], epochs, train, [None] * len(names), colors, linestyle="--")
  figures.bands(axes[0, 0], epochs, val, names, colors)
  figures.bands(axes[0, 1], epochs, gap, names, colors)
  axes[0, 0].set(xlabel="epoch", ylabel="accuracy (test mode)", ylim=(0.5, 1.01),
                 title="300 training digits: train (dashed) vs validation")
  axes[0, 0].legend(fontsize=8, loc="lower right")
  axes[0, 1].set(xlabel="epoch", ylabel="train - validation accuracy", title="the gap")
  axes[0, 1].legend(fontsize=8)
  measured = f"final gap {core.stats(zip(names, final.T))}"
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"variants": names, "final_gap": final.tolist(),
                       "final_val": val[:, :, -1].tolist()})


CLAIM = core.Claim(11, "regularization", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS,
                   run)
