"""Claim 23 (``log_scale``): searching the learning rate on a log scale finds good values that a
linear scale misses."""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Search the learning rate on a log scale"
SECTION = "Part 3, Hyperparameter optimization (hyperparameter ranges)"
STATEMENT = ("Search hyperparameters on a log scale: learning_rate = 10 ** uniform(-6, 1), "
             "because the learning rate has multiplicative effects on the training dynamics; "
             "sampling it uniformly spends almost every trial at the top of the range.")
EXPERIMENT = ("research.search.space.sample (method='random') of Adam's learning rate in "
              "[1e-5, 1e-1], once with scale='log' and once with scale='linear', `trials` "
              "trials per search and seed = the repeat; every trial of every repeat is a member "
              "of ONE research.train.train_members program (digits MLP 64-64-10, batch 64, "
              "`epochs` epochs; training seed = the repeat). A search's result = its best "
              "trial's best validation accuracy.")
RULE = "Over the repeats: best validation accuracy of the log-scale search - linear > 0."
SETTINGS = {"tiny": {"repeats": 1, "epochs": 1, "trials": 3},
            "short": {"repeats": 3, "epochs": 5, "trials": 6},
            "full": {"repeats": 6, "epochs": 8, "trials": 8}}
SCALES = ("log", "linear")


def run(ctx: core.Context) -> core.Outcome:
  from research.search.space import Space, sample
  s = ctx.settings
  base = engine.config({"model.hidden_sizes": (64,), "train.num_epochs": s.epochs})
  lrs = {}
  for scale in SCALES:
    sp = Space.from_dict({"learning_rate": {"path": "optimizer.learning_rate", "low": 1e-5,
                                            "high": 1e-1, "scale": scale}})
    lrs[scale] = np.array([[p["learning_rate"] for p in sample(sp, s.trials, seed=r)]
                           for r in range(s.repeats)])
  overrides = [{"optimizer.learning_rate": float(lr), "seed": r}
               for scale in SCALES for r in range(s.repeats) for lr in lrs[scale][r]]
  result = engine.members(engine.variants(base, overrides))
  best = np.where(result.best_val_accuracy < 0, 0.0, result.best_val_accuracy)
  accuracy = dict(zip(SCALES, best.reshape(len(SCALES), s.repeats, s.trials)))
  gain = accuracy["log"].max(axis=1) - accuracy["linear"].max(axis=1)
  conditions = [core.condition("best val accuracy: log - linear", gain, ">", 0.0,
                               hint="Adam on digits reaches ~98% for any rate in 1e-3..1e-1, the "
                               "decade where linear sampling puts 90% of its trials")]
  fig, axes = figures.figure(2, size=(5.2, 4.4))
  colors = {"log": "tab:blue", "linear": "tab:red"}
  ax = axes[0, 0]
  for scale in SCALES:
    ax.scatter(lrs[scale].ravel(), accuracy[scale].ravel(), color=colors[scale], s=20,
               alpha=0.6, label=f"{scale} scale")
  ax.set(xscale="log", xlabel="learning rate", ylabel="best validation accuracy of the trial",
         title="where each scale samples", ylim=(0, 1))
  ax.legend(fontsize=8, loc="lower left")
  ax = axes[0, 1]
  for scale in SCALES:
    ax.plot(np.arange(s.repeats), accuracy[scale].max(axis=1), "o-", color=colors[scale],
            label=scale)
  ax.set(xlabel="repeat", ylabel="best validation accuracy of the search",
         title=f"{s.trials} trials each", xticks=range(s.repeats))
  ax.legend(fontsize=8)
  below = {scale: float(np.mean(lrs[scale] < 1e-2)) for scale in SCALES}
  measured = (f"best val accuracy log {core.stat(accuracy['log'].max(axis=1))}, linear "
              f"{core.stat(accuracy['linear'].max(axis=1))}; log - linear {core.stat(gain)}; "
              f"share of trials below lr 1e-2: log {below['log']:.0%}, linear "
              f"{below['linear']:.0%}")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"lrs": {k: v.tolist() for k, v in lrs.items()},
                       "accuracy": {k: v.tolist() for k, v in accuracy.items()}})


CLAIM = core.Claim(23, "log_scale", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
