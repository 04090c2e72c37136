"""Claim 16 (``bowl``): on the elongated bowl z = x^2/20 + y^2 from (-7, 2) SGD zig-zags,
momentum overshoots, AdaGrad's path is the most direct, Adam is in between."""
from __future__ import annotations

import numpy as np

from research import train
from research.playbook import core, figures

TITLE = "The elongated bowl: zig-zag, overshoot, direct"
SECTION = "Part 3, Parameter updates (first-order methods; per-parameter adaptive rates)"
STATEMENT = ("On a surface much steeper in one direction, SGD makes slow progress along the "
             "shallow direction and jitters (zig-zags) along the steep one; momentum builds "
             "velocity and overshoots the target; per-parameter adaptive rates (AdaGrad) "
             "equalize the directions and head more directly for the minimum; Adam (momentum + "
             "RMSProp) in between.")
EXPERIMENT = ("research.optim sgd, momentum (mu 0.9), adagrad and adam (default betas) on "
              "z = x^2/20 + y^2 from (-7, 2), float32, each update research.train.make_step. "
              "Each rule at its own learning rate: the one of 10^-3 .. 10^0.5 (quarter decades, "
              "all tried at once as a population) with the smallest distance to the minimum "
              "after `steps` updates. Measured on that path: sign changes of y (zig-zag), the "
              "largest x (past the minimum at 0: overshoot), and directness = straight distance "
              "/ path length until the path first comes within 1% of the start's distance "
              "(1 = a straight line). Deterministic: one run.")
RULE = ("SGD's y changes sign more than 2.5 times (zig-zags); momentum's largest x > 0.35 (5% of "
        "the start's |x| past the minimum); AdaGrad's directness minus the largest of SGD's, "
        "momentum's and Adam's > 0 (most direct); Adam's directness minus the smaller of SGD's "
        "and momentum's > 0 and AdaGrad's minus Adam's > 0 (in between).")
SETTINGS = {"tiny": {"steps": 20}, "short": {"steps": 100}, "full": {"steps": 300}}
START = (-7.0, 2.0)
RULES = ("sgd", "momentum", "adagrad", "adam")
LRS = tuple(10.0 ** np.arange(-3.0, 0.51, 0.25))


def bowl(xy):
  """``z = x**2 / 20 + y**2``."""
  return xy[0] ** 2 / 20 + xy[1] ** 2


def rule(name: str):
  from research import optim
  return {"sgd": optim.sgd(0.1), "momentum": optim.momentum(0.1, mu=0.9),
          "adagrad": optim.adagrad(0.1), "adam": optim.adam(0.1)}[name]


def directness(path: np.ndarray) -> float:
  """Straight distance / path length up to the first point within 1% of the start's distance."""
  distance = np.linalg.norm(path, axis=1)
  close = np.flatnonzero(distance <= 0.01 * distance[0])
  end = close[0] if close.size else len(path) - 1
  length = np.sum(np.linalg.norm(np.diff(path[:end + 1], axis=0), axis=1))
  return float(np.linalg.norm(path[end] - path[0]) / length) if length > 0 else 1.0


def sign_changes(y: np.ndarray) -> int:
  """Sign changes of ``y`` while |y| > 1e-6 (float noise around 0 is not a zig-zag)."""
  y = y[np.abs(y) > 1e-6]
  return int(np.sum(np.sign(y[1:]) != np.sign(y[:-1])))


def run(ctx: core.Context) -> core.Outcome:
  steps = ctx.settings.steps
  paths, best_lr = {}, {}
  for name in RULES:
    population = train.toy_paths(rule(name), bowl, START, {"learning_rate": LRS}, steps)
    final = np.linalg.norm(population[:, -1], axis=1)
    final = np.where(np.isfinite(final), final, np.inf)
    k = int(np.argmin(final))
    paths[name], best_lr[name] = population[k], LRS[k]
  zigzag = {n: sign_changes(p[:, 1]) for n, p in paths.items()}
  overshoot = {n: float(np.max(p[:, 0])) for n, p in paths.items()}
  direct = {n: directness(p) for n, p in paths.items()}
  conditions = [
      core.condition("sign changes of y, SGD", zigzag["sgd"], ">", 2.5),
      core.condition("largest x, momentum", overshoot["momentum"], ">", 0.35),
      core.condition("directness AdaGrad - max(SGD, momentum, Adam)",
                     direct["adagrad"] - max(direct[n] for n in ("sgd", "momentum", "adam")),
                     ">", 0.0, hint="each rule runs at the rate that gets closest in `steps` "
                     "updates: AdaGrad's is large and its first steps are sign-like (+-lr on both "
                     "coordinates, i.e. at 45 degrees), while SGD's kills y within two updates "
                     "and then runs straight along x"),
      core.condition("directness Adam - min(SGD, momentum)",
                     direct["adam"] - min(direct["sgd"], direct["momentum"]), ">", 0.0),
      core.condition("directness AdaGrad - Adam", direct["adagrad"] - direct["adam"], ">", 0.0),
  ]
  fig, axes = figures.figure(2, size=(6.0, 4.4))
  ax = axes[0, 0]
  gx, gy = np.meshgrid(np.linspace(-8, 8, 200), np.linspace(-3, 3, 200))
  ax.contour(gx, gy, gx ** 2 / 20 + gy ** 2, levels=20, cmap="Greys", alpha=0.5)
  colors = dict(zip(RULES, ("tab:red", "tab:orange", "tab:green", "tab:blue")))
  for name, path in paths.items():
    ax.plot(path[:, 0], path[:, 1], ".-", markersize=3, linewidth=1, color=colors[name],
            label=f"{name} (lr {best_lr[name]:.3g}): directness {direct[name]:.2f}")
  ax.plot(*START, "k*", markersize=12)
  ax.plot(0, 0, "k+", markersize=12)
  ax.set(xlim=(-8, 8), ylim=(-3, 3), xlabel="x", ylabel="y", title="z = x^2/20 + y^2")
  ax.legend(fontsize=7, loc="lower right")
  ax = axes[0, 1]
  for name, path in paths.items():
    ax.semilogy(np.maximum(np.linalg.norm(path, axis=1), 1e-12), color=colors[name], label=name)
  ax.set(xlabel="update", ylabel="distance to the minimum", title="each rule at its best lr")
  ax.legend(fontsize=8, loc="lower left")
  figures.note(ax, [f"SGD y sign changes: {zigzag['sgd']}",
                    f"momentum max x: {overshoot['momentum']:.2f}"], loc="center right")
  measured = ("directness " + ", ".join(f"{n} {direct[n]:.3f}" for n in RULES)
              + f"; SGD zig-zags {zigzag['sgd']}x; momentum reaches x = "
              f"{overshoot['momentum']:.2f}; lrs " + ", ".join(f"{n} {best_lr[n]:.3g}"
                                                              for n in RULES))
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"best_lr": best_lr, "directness": direct, "sign_changes": zigzag,
                       "max_x": overshoot})


CLAIM = core.Claim(16, "bowl", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
