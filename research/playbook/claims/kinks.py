"""Claim 4 (``kinks``): near the kinks of a ReLU net a correct gradient shows large errors, and
the project's kink detection tells them from bugs."""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Kinks give large errors that are not bugs"
SECTION = "Part 3, Gradient checks (kinks in the objective)"
STATEMENT = ("Kinks (non-differentiable points of ReLU, max, SVM hinge) are a source of "
             "inaccuracy: when f(x+h) and f(x-h) lie on different sides of a kink the numerical "
             "gradient is wrong although the analytic one is right; keeping track of the "
             "'winners' of every max shows whether a kink was crossed.")
EXPERIMENT = ("research.checks.check_model_gradients of a correct digits ReLU MLP 64-32-32-10 "
              "(He, 20 examples, 30 coordinates per leaf, float64) at h = 1e-2, 1e-3, 1e-4 and "
              "1e-5; per checked coordinate its relative error and whether the checker's kink "
              "detection saw x+h or x-h take another decision than x. Large = above 1e-2 (the "
              "'probably wrong' band). Per seed (initialization, coordinates).")
RULE = ("Per seed, summed over the four h: the number of large-error coordinates is > 0 (kinks "
        "do produce large errors), the number of large-error coordinates NOT flagged as kink "
        "crossings is < 0.5 (none: every one is told apart), and the check at the default "
        "h = 1e-5 passes (1 = OK, > 0.5).")
HS = (1e-2, 1e-3, 1e-4, 1e-5)
SETTINGS = {"tiny": {"seeds": 1, "coords": 10, "hs": (1e-2, 1e-5)},
            "short": {"seeds": 3, "coords": 30, "hs": HS},
            "full": {"seeds": 5, "coords": 30, "hs": HS}}
LARGE = 1e-2


def check(h: float, seed: int, coords: int):
  from research.checks import check_model_gradients
  cfg = engine.config({"model.hidden_sizes": (32, 32), "model.activation": "relu",
                       "model.init": "he", "seed": seed, "gradcheck.num_examples": 20,
                       "gradcheck.coords_per_leaf": coords})
  cfg.gradcheck.h = h
  cfg.gradcheck.seed = seed
  return check_model_gradients(cfg, dataset=engine.dataset(cfg))


def run(ctx: core.Context) -> core.Outcome:
  seeds = range(ctx.settings.seeds)
  hs = tuple(ctx.settings.hs)
  large = np.zeros((len(seeds), len(hs)))
  unflagged = np.zeros((len(seeds), len(hs)))
  crossed = np.zeros((len(seeds), len(hs)))
  passed = np.zeros(len(seeds))
  points = []   # (h, error, crossed) for the figure
  for s in seeds:
    for j, h in enumerate(hs):
      report = check(h, s, ctx.settings.coords)
      errors = np.concatenate([leaf.rel_error for leaf in report.leaves])
      flags = np.concatenate([leaf.crossed_kink for leaf in report.leaves])
      big = errors > LARGE
      large[s, j], unflagged[s, j] = big.sum(), (big & ~flags).sum()
      crossed[s, j] = flags.sum()
      points += [(h, e, f) for e, f in zip(errors, flags)]
      if h == 1e-5:
        passed[s] = float(report.ok)
  conditions = [
      core.condition("large-error coordinates (> 1e-2), all h", large.sum(axis=1), ">", 0.0,
                     hint="the sampled coordinates may sit far from every kink"),
      core.condition("large-error coordinates not flagged as kink crossings",
                     unflagged.sum(axis=1), "<", 0.5,
                     hint="not a missed kink: at h = 1e-2 the centered difference's own "
                     "truncation error (h^2 f'''/6) can pass 1e-2 of a small gradient; the "
                     "unflagged coordinate seen was an output-layer weight (no kink downstream), "
                     "analytic -1.38e-4 vs numerical -1.30e-4. The rule counts it anyway"),
      core.condition("check passes at h=1e-5 (1 = OK)", passed, ">", 0.5),
  ]
  fig, axes = figures.figure(2, size=(5.2, 4.4))
  ax = axes[0, 0]
  pts = np.array(points, dtype=float)
  rng = np.random.default_rng(0)
  jitter = 10 ** rng.uniform(-0.12, 0.12, len(pts))
  tiny = 1e-16
  for flag, color, label in ((0, "tab:blue", "no kink crossed"), (1, "tab:orange",
                                                                    "kink crossed (flagged)")):
    sel = pts[:, 2] == flag
    ax.scatter(pts[sel, 0] * jitter[sel], np.maximum(pts[sel, 1], tiny), s=6, color=color,
               alpha=0.6, label=label)
  ax.axhline(LARGE, color="tab:red", linestyle="--", linewidth=1, label="large: > 1e-2")
  ax.set(xscale="log", yscale="log", xlabel="h", ylabel="relative error per coordinate",
         title="ReLU MLP, correct gradient")
  ax.legend(fontsize=8, loc="lower right")
  ax = axes[0, 1]
  x = np.arange(len(hs))
  ax.bar(x - 0.27, crossed.mean(axis=0), 0.27, color="tab:orange", label="kink crossings")
  ax.bar(x, large.mean(axis=0), 0.27, color="tab:red", label="large errors")
  ax.bar(x + 0.27, unflagged.mean(axis=0), 0.27, color="k", label="large, not flagged")
  ax.set(xticks=x, xticklabels=[f"{h:g}" for h in hs], xlabel="h",
         ylabel="coordinates (mean over seeds)", title="what the kink detection tells apart")
  ax.legend(fontsize=8)
  measured = (f"large-error coordinates {core.stat(large.sum(axis=1))} per seed, of which not "
              f"flagged {core.stat(unflagged.sum(axis=1))}; kink crossings "
              f"{core.stat(crossed.sum(axis=1))}; check at h=1e-5 OK in "
              f"{int(passed.sum())}/{len(passed)}")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"hs": list(hs), "large": large.tolist(), "unflagged": unflagged.tolist(),
                       "crossed": crossed.tolist(), "passed": passed.tolist()})


CLAIM = core.Claim(4, "kinks", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
