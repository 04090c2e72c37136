"""Claim 1 (``centered``): centered differences have error O(h^2), forward differences O(h)."""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

STATEMENT = ("Use the centered difference formula (f(x+h) - f(x-h)) / 2h: its error is O(h^2), "
             "the forward difference (f(x+h) - f(x)) / h has error O(h) (Taylor expansion); too "
             "small an h brings numerical (roundoff) problems.")
TITLE = "Centered differences O(h^2), forward O(h)"
SECTION = "Part 3, Gradient checks (use the centered formula)"
EXPERIMENT = ("research.checks.check_model_gradients on a digits tanh MLP 64-32-10 (Xavier, "
              "3 examples, 10 coordinates per leaf, float64) with h_sweep (h = 1e-1 .. 1e-12), "
              "once with formula='centered' and once with 'forward'; per seed (initialization "
              "and sampled coordinates) the median relative error at each h.")
RULE = ("Slope of log10(median error) against log10(h), least squares over h = 1e-1, 1e-2, "
        "1e-3 (truncation dominates there): centered in (1.5, 2.5), forward in (0.5, 1.5); "
        "roundoff floor: the centered error at h = 1e-12 is more than 100x its smallest value "
        "over the sweep.")
SETTINGS = {"tiny": {"seeds": 1}, "short": {"seeds": 3}, "full": {"seeds": 5}}
FIT_HS = (1e-1, 1e-2, 1e-3)
FORMULAS = ("centered", "forward")


def sweep(formula: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """``(hs, median relative error)`` of one check (kink-free: tanh)."""
  from research.checks import check_model_gradients
  cfg = engine.config({"model.hidden_sizes": (32,), "model.activation": "tanh",
                       "model.init": "xavier", "seed": seed, "gradcheck.num_examples": 3,
                       "gradcheck.coords_per_leaf": 10})
  cfg.gradcheck.h_sweep = True
  cfg.gradcheck.formula = formula
  cfg.gradcheck.seed = seed
  report = check_model_gradients(cfg, dataset=engine.dataset(cfg))
  hs = np.array([row.h for row in report.sweep])
  return hs, np.array([row.median_rel_error for row in report.sweep])


def slope(hs: np.ndarray, errors: np.ndarray) -> float:
  """Least-squares slope of log10(error) over log10(h) at :data:`FIT_HS`."""
  keep = np.isin(hs, FIT_HS)
  return float(np.polyfit(np.log10(hs[keep]), np.log10(errors[keep]), 1)[0])


def run(ctx: core.Context) -> core.Outcome:
  seeds = range(ctx.settings.seeds)
  curves = {f: [] for f in FORMULAS}
  hs = None
  for seed in seeds:
    for formula in FORMULAS:
      hs, errors = sweep(formula, seed)
      curves[formula].append(errors)
  curves = {f: np.array(v) for f, v in curves.items()}
  slopes = {f: np.array([slope(hs, e) for e in curves[f]]) for f in FORMULAS}
  floor_rise = np.array([e[np.argmin(hs)] / np.min(e) for e in curves["centered"]])
  conditions = [
      core.condition("log-log slope, centered", slopes["centered"], ">", 1.5),
      core.condition("log-log slope, centered", slopes["centered"], "<", 2.5),
      core.condition("log-log slope, forward", slopes["forward"], ">", 0.5),
      core.condition("log-log slope, forward", slopes["forward"], "<", 1.5),
      core.condition("centered error at h=1e-12 / its minimum", floor_rise, ">", 100.0,
                     hint="float64 roundoff should dominate at h = 1e-12"),
  ]
  fig, axes = figures.figure(size=(7.0, 4.8))
  ax = axes[0, 0]
  for formula, color in zip(FORMULAS, ("tab:blue", "tab:orange")):
    order = np.argsort(hs)
    figures.seed_band(ax, hs[order], curves[formula][:, order], color=color, marker="o",
                      label=f"{formula}: slope {core.stat(slopes[formula])}")
  ref = np.array(FIT_HS)
  for power, style in ((2, ":"), (1, "--")):
    anchor = np.nanmedian(curves["centered" if power == 2 else "forward"][:, 0])
    ax.plot(ref, anchor * (ref / ref[0]) ** power, "k" + style, linewidth=1,
            label=f"h^{power} reference")
  ax.set(xscale="log", yscale="log", xlabel="h", ylabel="median relative error",
         title="tanh MLP, float64: error vs step h")
  ax.axvspan(min(FIT_HS), max(FIT_HS), color="0.9", zorder=0, label="slope fitted here")
  ax.legend(fontsize=8, loc="lower left")
  ax.grid(True, which="major", alpha=0.3)
  measured = (f"slope centered {core.stat(slopes['centered'])}, forward "
              f"{core.stat(slopes['forward'])}; error at h=1e-12 is {core.stat(floor_rise)}x "
              "the centered minimum")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"hs": hs.tolist(), **{f"median_error_{f}": curves[f].tolist()
                                             for f in FORMULAS},
                       "slopes": {f: s.tolist() for f, s in slopes.items()},
                       "floor_rise": floor_rise.tolist()})


CLAIM = core.Claim(1, "centered", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
