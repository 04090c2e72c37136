"""Claim 17 (``saddle``): near a saddle point SGD stays stuck longest; momentum, RMSProp and
Adam escape sooner."""
from __future__ import annotations

import numpy as np

from research import train
from research.playbook import core, figures

TITLE = "Saddle point: SGD stuck longest"
SECTION = "Part 3, Parameter updates (the animations: a saddle point)"
STATEMENT = ("At a saddle point SGD has a very hard time breaking symmetry and gets stuck near "
             "the top, while momentum-based and adaptive methods (RMSProp, AdaGrad, Adam) head "
             "down the negative-curvature direction much sooner.")
EXPERIMENT = ("research.optim sgd, momentum (mu 0.9), rmsprop (decay 0.99) and adam on "
              "z = x^2 - y^2 from (1, eps), eps ~ U(1e-4, 1e-3) per seed (close to the stable "
              "axis through the saddle), float32, each update research.train.make_step; every "
              "rule at the same learning rates 1e-3, 1e-2, 1e-1. Steps to escape = the first "
              "update with |y| >= 1 (`budget` + 1 when never).")
RULE = ("For every learning rate and every rule R in momentum, RMSProp, Adam: log10(steps of "
        "SGD / steps of R) > 0 over the seeds (SGD needs the most steps).")
SETTINGS = {"tiny": {"seeds": 1, "budget": 200}, "short": {"seeds": 3, "budget": 5000},
            "full": {"seeds": 5, "budget": 10000}}
RULES = ("sgd", "momentum", "rmsprop", "adam")
LRS = (1e-3, 1e-2, 1e-1)


def saddle(xy):
  """``z = x**2 - y**2``."""
  return xy[0] ** 2 - xy[1] ** 2


def rule(name: str):
  from research import optim
  return {"sgd": optim.sgd(0.1), "momentum": optim.momentum(0.1, mu=0.9),
          "rmsprop": optim.rmsprop(0.1), "adam": optim.adam(0.1)}[name]


def escape_steps(paths: np.ndarray, budget: int) -> np.ndarray:
  """First update with |y| >= 1 for each path ``(P, steps + 1, 2)``; budget + 1 when none."""
  out = np.abs(paths[:, :, 1]) >= 1.0
  out = out | ~np.isfinite(paths[:, :, 1])
  return np.where(out.any(axis=1), np.argmax(out, axis=1), budget + 1).astype(float)


def run(ctx: core.Context) -> core.Outcome:
  s = ctx.settings
  rng = np.random.default_rng(0)
  eps = rng.uniform(1e-4, 1e-3, s.seeds)
  starts = np.repeat(np.stack([np.ones(s.seeds), eps], axis=1), len(LRS), axis=0)
  lrs = np.tile(LRS, s.seeds)
  steps, paths = {}, {}
  for name in RULES:
    population = train.toy_paths(rule(name), saddle, starts, {"learning_rate": lrs}, s.budget)
    steps[name] = escape_steps(population, s.budget).reshape(s.seeds, len(LRS))
    paths[name] = population[1]   # seed 0, lr 1e-2, for the figure
  conditions = [core.condition(f"lr {lr:g}: log10(steps SGD / steps {name})",
                               np.log10(steps["sgd"][:, j] / steps[name][:, j]), ">", 0.0)
                for j, lr in enumerate(LRS) for name in RULES[1:]]
  fig, axes = figures.figure(2, size=(5.4, 4.4))
  ax = axes[0, 0]
  gx, gy = np.meshgrid(np.linspace(-1.5, 1.5, 200), np.linspace(-1.5, 1.5, 200))
  ax.contour(gx, gy, gx ** 2 - gy ** 2, levels=20, cmap="Greys", alpha=0.5)
  colors = dict(zip(RULES, ("tab:red", "tab:orange", "tab:purple", "tab:blue")))
  for name, path in paths.items():
    cut = path[:int(min(steps[name][0, 1], s.budget)) + 1]
    ax.plot(cut[:, 0], np.clip(cut[:, 1], -1.5, 1.5), ".-", markersize=2, linewidth=1,
            color=colors[name], label=f"{name}: {int(steps[name][0, 1])} steps")
  ax.set(xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), xlabel="x", ylabel="y",
         title="z = x^2 - y^2, lr 0.01, seed 0")
  ax.legend(fontsize=8)
  ax = axes[0, 1]
  for name in RULES:
    mean = np.exp(np.mean(np.log(steps[name]), axis=0))
    ax.plot(LRS, mean, "o-", color=colors[name], label=name)
  ax.axhline(s.budget + 1, color="k", linestyle=":", linewidth=1, label="never (budget)")
  ax.set(xscale="log", yscale="log", xlabel="learning rate (same for every rule)",
         ylabel="updates to escape (|y| >= 1)", title="geometric mean over the seeds")
  ax.legend(fontsize=8)
  measured = "; ".join(f"lr {lr:g}: " + core.stats((n, steps[n][:, j]) for n in RULES)
                       for j, lr in enumerate(LRS))
  return core.Outcome(conditions, "steps to escape " + measured,
                      figures.finish(fig, ctx, conditions),
                      {"lrs": list(LRS), "steps": {n: v.tolist() for n, v in steps.items()},
                       "eps": eps.tolist()})


CLAIM = core.Claim(17, "saddle", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
