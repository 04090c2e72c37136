"""Claim 10 (``update_ratio``): the update/weight ratio of a well-chosen learning rate is ~1e-3
and moves up and down with the learning rate.

Single runs, not members: the update/weight ratios are the monitor's, measured by the training
loop's monitored step (``metrics.jsonl``: ``update_ratio/<leaf>``), which the members trainer does
not run.
"""
from __future__ import annotations

import os

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Update/weight ratio ~1e-3 at a good learning rate"
SECTION = "Part 3, Babysitting the learning process (ratio of weights:updates)"
STATEMENT = ("Track the ratio of the update magnitudes to the value magnitudes: it should be "
             "somewhere around 1e-3. If it is lower the learning rate might be too low; if it is "
             "higher the learning rate is likely too high.")
EXPERIMENT = ("research.train.train_and_evaluate with the monitor on (update/weight ratio "
              "||dW|| / ||W|| of every leaf every 5 updates) on digits (MLP 64-100-10, He, SGD "
              "with momentum 0.9, batch 64) for a sweep of learning rates, per seed. Measured "
              "per run: the median over the weight leaves of each leaf's median ratio over the "
              "run (research.monitor.update_ratio_summary); 'well chosen' = the learning rate of "
              "the sweep with the best validation accuracy.")
RULE = ("Per seed: the ratio rises with the learning rate (smallest log10 step between "
        "consecutive rates > 0); at the well-chosen rate the ratio lies in the monitor's "
        "healthy band 1e-3 / 5 .. 1e-3 x 5 (research.monitor.Thresholds.ratio_factor): "
        "log10(ratio) > log10(2e-4) and < log10(5e-3).")
SETTINGS = {"tiny": {"seeds": 1, "epochs": 1, "lrs": (-3.0, -1.0)},
            "short": {"seeds": 2, "epochs": 4, "lrs": (-4.0, -3.0, -2.0, -1.0)},
            "full": {"seeds": 3, "epochs": 10, "lrs": tuple(np.arange(-4.0, -0.49, 0.5))}}


def weight_ratios(workdir: str) -> dict[str, float]:
  """Each weight leaf's median update ratio over the run (research.monitor)."""
  from research import monitor
  summary = monitor.update_ratio_summary(monitor.read_metrics(workdir))
  return {leaf: v["run_median"] for leaf, v in summary.items() if v["kind"] == "weight"}


def run(ctx: core.Context) -> core.Outcome:
  from research.monitor import Thresholds
  s = ctx.settings
  lrs = 10.0 ** np.array(s.lrs)
  ratios = np.zeros((s.seeds, len(lrs)))
  per_leaf = {}
  best_val = np.zeros((s.seeds, len(lrs)))
  for seed in range(s.seeds):
    for j, lr in enumerate(lrs):
      cfg = engine.config({"model.hidden_sizes": (100,), "optimizer.name": "momentum",
                           "optimizer.learning_rate": float(lr), "train.num_epochs": s.epochs,
                           "monitor.enabled": True, "monitor.every_steps": 5, "seed": seed})
      workdir = os.path.join(ctx.workdir, f"lr{lr:.0e}_seed{seed}")
      history = engine.single(cfg, workdir).history
      per_leaf[(seed, j)] = weight_ratios(workdir)
      ratios[seed, j] = float(np.median(list(per_leaf[(seed, j)].values())))
      best_val[seed, j] = max([r["val_accuracy"] for r in history] or [np.nan])
  good = np.nanargmax(best_val, axis=1)
  at_good = ratios[np.arange(s.seeds), good]
  t = Thresholds()
  steps = np.diff(np.log10(ratios), axis=1).min(axis=1)
  conditions = [
      core.condition("smallest log10 step of the ratio between consecutive rates", steps, ">",
                     0.0, hint="the median over this net's two weight leaves is their mean, and "
                     "the output layer's ratio (its weights start x0.1, so ||W|| is small) does "
                     "not follow the rate; the first layer alone does (notes)"),
      core.condition("log10 ratio at the well-chosen rate", np.log10(at_good), ">",
                     np.log10(t.ratio_low)),
      core.condition("log10 ratio at the well-chosen rate", np.log10(at_good), "<",
                     np.log10(t.ratio_high), hint="the best validation accuracy after a few "
                     "epochs favours the largest rate that does not diverge"),
  ]
  fig, axes = figures.figure(2, size=(5.2, 4.4))
  ax = axes[0, 0]
  for seed in range(s.seeds):
    ax.plot(lrs, ratios[seed], "o-", color="tab:blue", alpha=0.6)
    ax.plot(lrs[good[seed]], at_good[seed], "*", color="tab:green", markersize=14)
  leaves = sorted(per_leaf[(0, 0)])
  for leaf, style in zip(leaves, (":", "--", "-.")):
    mean = [np.exp(np.mean([np.log(per_leaf[(k, j)][leaf]) for k in range(s.seeds)]))
            for j in range(len(lrs))]
    ax.plot(lrs, mean, style, color="0.4", linewidth=1, label=f"{leaf} alone")
  ax.axhspan(t.ratio_low, t.ratio_high, color="tab:green", alpha=0.12, label="healthy band")
  ax.axhline(1e-3, color="tab:green", linestyle="--", linewidth=1)
  ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="update/weight ratio "
         "(weights, median over the run)", title="ratio vs learning rate (* = best val)")
  ax.legend(fontsize=8, loc="upper left")
  ax = axes[0, 1]
  for seed in range(s.seeds):
    ax.plot(lrs, best_val[seed], "o-", color="tab:orange", alpha=0.6)
  ax.set(xscale="log", xlabel="learning rate", ylabel="best validation accuracy",
         title="SGD + momentum 0.9 on digits")
  mean = ratios.mean(axis=0)
  measured = (f"ratio at the best-val rate ({core.stat(lrs[good])}): {core.stat(at_good)}; "
              f"smallest step between rates {core.stat(steps)} (log10); from "
              f"{core.fmt(mean[0])} at lr {lrs[0]:.0e} to {core.fmt(mean[-1])} at {lrs[-1]:.0e}")
  notes = ["ratio per rate (median over the weight leaves): " + ", ".join(
      f"{lr:.0e}: {core.stat(ratios[:, j])}" for j, lr in enumerate(lrs))]
  notes += [f"{leaf} alone: " + ", ".join(
      f"lr {lr:.0e}: {core.stat([per_leaf[(k, j)][leaf] for k in range(s.seeds)])}"
      for j, lr in enumerate(lrs)) for leaf in leaves]
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"lrs": lrs.tolist(), "ratios": ratios.tolist(),
                       "best_val": best_val.tolist(),
                       "per_leaf": {f"{k}/{j}": v for (k, j), v in per_leaf.items()}}, notes)


CLAIM = core.Claim(10, "update_ratio", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
