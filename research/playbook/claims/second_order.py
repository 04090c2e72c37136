"""Claim 21 (``second_order``): on a full-batch problem L-BFGS reaches a tolerance in far fewer
evaluations than first-order rules."""
from __future__ import annotations

import os

import numpy as np

from research.playbook import core, figures

TITLE = "L-BFGS: far fewer evaluations than first-order rules"
SECTION = "Part 3, Second order methods"
STATEMENT = ("Second order methods (Newton, quasi-Newton such as L-BFGS) use the curvature and "
             "need no learning rate; L-BFGS approximates the inverse Hessian from gradients and "
             "works well on full-batch, deterministic problems, where it converges in far fewer "
             "iterations than first-order methods (it does not transfer easily to mini-batches).")
EXPERIMENT = ("research.train.full_batch.compare_rules with configs/second_order_softmax.py "
              "(softmax regression on digits, l2 1e-3: strictly convex; full batch; float32): "
              "methods nesterov (lr 0.5, mu 0.9), adam (lr 0.05) and lbfgs (memory 10), each for "
              "`budget_s` seconds of update time; per seed (initialization). Tolerance: a loss "
              "within 0.1% of the lowest loss any method reached; measured: the "
              "gradient-equivalent evaluations until a method first gets there (+inf when it "
              "never does within the budget).")
RULE = ("Per seed: log10(evaluations of the best first-order rule / evaluations of L-BFGS) > "
        "log10(5) (at least 5x fewer; a first-order rule that never reaches the tolerance counts "
        "as +inf).")
METHODS = ("nesterov", "adam", "lbfgs")
SETTINGS = {"tiny": {"seeds": 1, "budget_s": 0.3, "methods": ("nesterov", "lbfgs")},
            "short": {"seeds": 2, "budget_s": 1.5, "methods": METHODS},
            "full": {"seeds": 3, "budget_s": 5.0, "methods": METHODS}}
TOLERANCE = 1e-3


def evaluations_to(trace: dict, target: float) -> float:
  """Evaluations at the first point whose loss is <= target (+inf when none)."""
  loss = np.asarray(trace["loss"])
  hit = np.flatnonzero(loss <= target)
  return float(trace["evaluations"][hit[0]]) if hit.size else np.inf


def run(ctx: core.Context) -> core.Outcome:
  from configs import second_order_softmax
  from research.train.full_batch import compare_rules
  s = ctx.settings
  methods = tuple(s.methods)
  evals = {m: [] for m in methods}
  traces = []
  for seed in range(s.seeds):
    cfg = second_order_softmax.get_config()
    cfg.seed = seed
    cfg.second_order.methods = ",".join(methods)
    cfg.second_order.time_budget_s = float(s.budget_s)
    report = compare_rules(cfg, os.path.join(ctx.workdir, f"seed{seed}"), log=None)
    best = min(min(r["loss"]) for r in report["methods"].values())
    for m in methods:
      evals[m].append(evaluations_to(report["methods"][m], best * (1 + TOLERANCE)))
    traces.append({m: report["methods"][m] for m in methods})
  evals = {m: np.array(v) for m, v in evals.items()}
  first_order = np.min([evals[m] for m in methods if m != "lbfgs"], axis=0)
  with np.errstate(divide="ignore"):
    advantage = np.log10(first_order / evals["lbfgs"])
  conditions = [core.condition("log10(evaluations: best first-order rule / L-BFGS)", advantage,
                               ">", float(np.log10(5)))]
  fig, axes = figures.figure(size=(7.0, 4.6))
  ax = axes[0, 0]
  colors = {"nesterov": "tab:blue", "adam": "tab:orange", "lbfgs": "tab:green"}
  best = min(min(min(t[m]["loss"]) for m in methods) for t in traces[:1])
  for m in methods:
    t = traces[0][m]
    x = np.asarray(t["evaluations"])[1:]
    y = np.asarray(t["loss"])[1:] - best
    keep = y > 0
    ax.plot(x[keep], y[keep], color=colors[m],
            label=f"{m}: {core.stat(evals[m])} evaluations to the tolerance")
  ax.axhline(best * TOLERANCE, color="k", linestyle="--", linewidth=1,
             label="tolerance (0.1% of the best loss)")
  ax.set(xscale="log", yscale="log", xlabel="gradient-equivalent evaluations",
         ylabel="training loss - best loss", title="softmax regression on digits, full batch "
         "(seed 0)")
  ax.legend(fontsize=8)
  measured = f"evaluations to within 0.1% of the best loss: {core.stats(evals)}"
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"evaluations": {m: v.tolist() for m, v in evals.items()},
                       "steps": [{m: t[m]["steps"] for m in methods} for t in traces]})


CLAIM = core.Claim(21, "second_order", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS,
                   run)
