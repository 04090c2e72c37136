"""Claim 7 (``overfit``): a net drives the loss to ~0 on a tiny subset (20 examples) without
regularization."""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Overfit a tiny subset: loss ~0, 100% train accuracy"
SECTION = "Part 3, Before learning: sanity checks (overfit a tiny subset of data)"
STATEMENT = ("Before training on the full dataset, try to train on a tiny portion (e.g. 20 "
             "examples) and make sure you can achieve zero cost, with regularization off.")
EXPERIMENT = ("research.train.train_members: the default config (MLP 64-256-256-10, He, Adam "
              "1e-3) with data.subset = 20, batch_size = 20 (every epoch is one full-batch "
              "update), l2 = 0, no dropout, for `steps` updates; one member per seed. Measured: "
              "the final training loss and accuracy of the final parameters on the 20 examples "
              "(test mode), and the validation accuracy (which should stay low).")
RULE = ("Per seed: final training loss < 0.01 (~0) and final training accuracy > 0.999 "
        "(100%).")
SETTINGS = {"tiny": {"seeds": 2, "steps": 20}, "short": {"seeds": 3, "steps": 300},
            "full": {"seeds": 5, "steps": 500}}


def run(ctx: core.Context) -> core.Outcome:
  from research.train import evaluate, make_members_eval_step
  s = ctx.settings
  base = engine.config({"data.subset": 20, "train.batch_size": 20, "train.num_epochs": s.steps,
                        "loss.l2": 0.0, "model.dropout": 0.0})
  runs = engine.sweep(base, [{}], s.seeds)
  experiment, state = runs.result.experiment, runs.result.state
  data = experiment.dataset
  final = evaluate(make_members_eval_step(experiment.model), state.params, state.batch_stats,
                   data.x_train, data.y_train, 512)
  losses = runs.curves("train_loss", s.steps)[:, 0]
  val = runs.curves("val_accuracy", s.steps)[:, 0]
  conditions = [core.condition("final training loss on the 20 examples", final["loss"], "<",
                               0.01),
                core.condition("final training accuracy on the 20 examples", final["accuracy"],
                               ">", 0.999)]
  fig, axes = figures.figure(2, size=(5.0, 4.2))
  steps = np.arange(1, s.steps + 1)
  figures.seed_band(axes[0, 0], steps, losses, color="tab:blue", label="training loss")
  axes[0, 0].set(yscale="log", xlabel="update (full batch of 20)", ylabel="training loss",
                 title="20 digits, no regularization")
  figures.note(axes[0, 0], [f"final {core.stat(final['loss'])}"])
  figures.seed_band(axes[0, 1], steps, val, color="tab:orange", label="validation accuracy")
  axes[0, 1].axhline(1.0, color="tab:blue", linestyle="--", label="training accuracy at the end")
  axes[0, 1].set(ylim=(0, 1.05), xlabel="update", ylabel="accuracy",
                 title="memorized, not generalized")
  axes[0, 1].legend(fontsize=8, loc="lower right")
  measured = (f"after {s.steps} updates: training loss {core.stat(final['loss'])}, training "
              f"accuracy {core.stat(final['accuracy'])}, validation accuracy "
              f"{core.stat(val[:, -1])}")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"final_loss": final["loss"].tolist(),
                       "final_accuracy": final["accuracy"].tolist(),
                       "val_accuracy": val[:, -1].tolist()})


CLAIM = core.Claim(7, "overfit", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
