"""Claim 14 (``init``): a 5-layer, 100-unit ReLU net does not learn from std 0.01; Xavier and He
do, He faster.

The seed names three schemes, so the rule compares those (``small`` is N(0, 0.01^2) itself); the
same net over a fine sweep of the scale (``model.init = normal``, ``model.init_std``) is claim
``batch_norm``'s figure, without batch norm.
"""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Std 0.01 does not learn; Xavier and He do, He faster"
SECTION = "Part 2, Weight initialization (calibrating the variances with 1/sqrt(n); He for ReLU)"
STATEMENT = ("Small random numbers (0.01 * randn) work for small nets but in deeper ones the "
             "signal and its gradient shrink layer after layer, so the net does not learn; "
             "1/sqrt(n) calibration (Xavier) fixes it, and for ReLU units w = randn(n) * "
             "sqrt(2/n) (He) is the recommended, faster-converging choice.")
EXPERIMENT = ("research.train.train_members on digits: MLP 64-100-100-100-100-100-10 (ReLU), "
              "every layer (output included: output_scale 1) drawn by the init scheme 'small' "
              "(N(0, 0.01^2)), 'xavier' or 'he'; SGD with momentum 0.9, lr 0.01, batch 64; one "
              "member per (scheme, seed), all in one program (model.init is a member field).")
RULE = ("Per seed: best validation accuracy < 0.5 for std 0.01 (does not learn), > 0.9 for "
        "Xavier and > 0.9 for He (learn); He faster: mean training loss over the epochs, "
        "Xavier - He > 0.")
SETTINGS = {"tiny": {"seeds": 1, "epochs": 2, "layers": 1},
            "short": {"seeds": 3, "epochs": 10, "layers": 5},
            "full": {"seeds": 5, "epochs": 30, "layers": 5}}
INITS = ("small", "xavier", "he")
#: A member that diverged counts as chance from where it stopped.
CHANCE = 0.1


def base_config(epochs: int, batch_norm: bool = False, layers: int = 5):
  """The 5-layer ReLU net of claims ``init`` and ``batch_norm``."""
  return engine.config({"model.hidden_sizes": (100,) * layers, "model.output_scale": 1.0,
                        "model.batch_norm": batch_norm, "optimizer.name": "momentum",
                        "optimizer.learning_rate": 0.01, "optimizer.mu": 0.9,
                        "train.num_epochs": epochs})


def run(ctx: core.Context) -> core.Outcome:
  s = ctx.settings
  runs = engine.sweep(base_config(s.epochs, layers=s.layers),
                      [{"model.init": init} for init in INITS], s.seeds)
  loss = runs.curves("train_loss", s.epochs)
  val = runs.curves("val_accuracy", s.epochs, fill=CHANCE)
  best = runs.best_val(CHANCE)
  area = np.nanmean(loss, axis=2)
  conditions = [
      core.condition("best validation accuracy, std 0.01", best[:, 0], "<", 0.5),
      core.condition("best validation accuracy, Xavier", best[:, 1], ">", 0.9),
      core.condition("best validation accuracy, He", best[:, 2], ">", 0.9),
      core.condition("mean training loss over the epochs, Xavier - He", area[:, 1] - area[:, 2],
                     ">", 0.0, hint="at 5 layers Xavier's variance halving per ReLU layer costs "
                     "little"),
  ]
  fig, axes = figures.figure(2, size=(5.2, 4.2))
  epochs = np.arange(1, s.epochs + 1)
  colors = ("tab:red", "tab:orange", "tab:blue")
  labels = ("std 0.01", "Xavier", "He")
  figures.bands(axes[0, 0], epochs, loss, labels, colors, marker=".")
  figures.bands(axes[0, 1], epochs, val, labels, colors, marker=".")
  axes[0, 0].set(yscale="log", xlabel="epoch", ylabel="training loss",
                 title="5 x 100 ReLU MLP, SGD momentum")
  axes[0, 0].legend(fontsize=8)
  axes[0, 1].set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1), title="accuracy")
  figures.note(axes[0, 1], [f"{name}: best {core.stat(best[:, j])}"
                            for j, name in enumerate(labels)],
               loc="lower right")
  measured = (f"best val accuracy {core.stats(zip(labels, best.T))}; mean training loss "
              f"Xavier - He {core.stat(area[:, 1] - area[:, 2])}")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"inits": list(INITS), "best_val": best.tolist(),
                       "mean_train_loss": area.tolist()})


CLAIM = core.Claim(14, "init", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
