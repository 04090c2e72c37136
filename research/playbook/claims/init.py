"""Claim 14 (``init``): a 5-layer, 100-unit ReLU net does not learn from std 0.01; Xavier and He
do, He faster."""
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


def base_config(epochs: int, batch_norm: bool = False, layers: int = 5):
  """The 5-layer ReLU net of claims ``init`` and ``batch_norm``."""
  return engine.config({"model.hidden_sizes": (100,) * layers, "model.output_scale": 1.0,
                        "model.batch_norm": batch_norm, "optimizer.name": "momentum",
                        "optimizer.learning_rate": 0.01, "optimizer.mu": 0.9,
                        "train.num_epochs": epochs})


def train_inits(epochs: int, seeds: int, inits, batch_norm: bool = False, layers: int = 5):
  """``(train_loss, val_accuracy, best_val)`` arrays ``(seeds, len(inits), epochs)`` /
  ``(seeds, len(inits))``; a member that diverged counts as chance (0.1) from where it stopped."""
  grid = [(init, seed) for seed in range(seeds) for init in inits]
  result = engine.members(engine.variants(base_config(epochs, batch_norm, layers),
                                          [{"model.init": i, "seed": s} for i, s in grid]))
  loss = engine.pad([engine.curve(h, "train_loss") for h in result.history], epochs)
  val = engine.pad([engine.curve(h, "val_accuracy") for h in result.history], epochs, 0.1)
  best = np.where(result.best_val_accuracy < 0, 0.1, result.best_val_accuracy)
  shape = (seeds, len(inits))
  return (loss.reshape(*shape, epochs), val.reshape(*shape, epochs), best.reshape(shape),
          np.array([e is not None for e in result.errors]).reshape(shape))


def run(ctx: core.Context) -> core.Outcome:
  s = ctx.settings
  loss, val, best, _ = train_inits(s.epochs, s.seeds, INITS, layers=s.layers)
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
  for j in range(len(INITS)):
    figures.seed_band(axes[0, 0], epochs, loss[:, j], color=colors[j], marker=".",
                      label=labels[j])
    figures.seed_band(axes[0, 1], epochs, val[:, j], color=colors[j], marker=".",
                      label=labels[j])
  axes[0, 0].set(yscale="log", xlabel="epoch", ylabel="training loss",
                 title="5 x 100 ReLU MLP, SGD momentum")
  axes[0, 0].legend(fontsize=8)
  axes[0, 1].set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1), title="accuracy")
  figures.note(axes[0, 1], [f"{name}: best {core.stat(best[:, j])}"
                            for j, name in enumerate(labels)],
               loc="lower right")
  measured = ("best val accuracy " + ", ".join(f"{name} {core.stat(best[:, j])}"
                                               for j, name in enumerate(labels))
              + f"; mean training loss Xavier - He {core.stat(area[:, 1] - area[:, 2])}")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, 14, TITLE, conditions),
                      {"inits": list(INITS), "best_val": best.tolist(),
                       "mean_train_loss": area.tolist()})


CLAIM = core.Claim(14, "init", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
