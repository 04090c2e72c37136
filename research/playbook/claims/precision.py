"""Claim 2 (``precision``): a correct gradient checked in float32 shows errors of ~1e-2..1e-4;
in float64 ~1e-7 or better."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from research.playbook import core, engine, figures

TITLE = "float32 gradient checks look wrong, float64 ones do not"
SECTION = "Part 3, Gradient checks (use double precision)"
STATEMENT = ("Use double precision: checking in single precision often gives high relative "
             "errors (as high as 1e-2) even with a correct gradient; in double precision a "
             "correct gradient of a smooth function reaches ~1e-7 or less.")
EXPERIMENT = ("research.checks.check_gradients of the same correct gradient (a digits tanh MLP "
              "64-32-10, Xavier, training loss on 3 examples, 10 coordinates per leaf) twice: in "
              "float32 (float64=False, float32 parameters and data) and in float64, at the "
              "checker's default h = 1e-5 and over the h sweep 1e-1..1e-12; per seed "
              "(initialization, coordinates).")
RULE = ("At h = 1e-5: the float32 median relative error (every coordinate) is above 1e-4 "
        "(the correct gradient lands in the checker's 'uncomfortable' or 'probably wrong' "
        "bands), and the float64 maximum relative error the checker grades is below 1e-7 (its "
        "'good' band; coordinates whose difference is below float64's resolution eps*|f|/h, "
        "i.e. tiny gradients, are not graded by the checker and are reported apart).")
SETTINGS = {"tiny": {"seeds": 1}, "short": {"seeds": 3}, "full": {"seeds": 5}}
DTYPES = ("float32", "float64")


def problem(seed: int):
  """``(loss_fn(params, batch_stats, x, y), params, batch_stats, x, y)``: the training loss of a
  tanh MLP as a training run builds it (``build_experiment``, ``init_state``, ``make_loss_fn``)."""
  from research.train import make_loss_fn
  cfg = engine.config({"model.hidden_sizes": (32,), "model.activation": "tanh",
                       "model.init": "xavier", "seed": seed})
  experiment, state = engine.initial_state(cfg)
  objective = make_loss_fn(experiment.model, 0.0)
  key = jax.random.fold_in(state.rng, 0)

  def loss_fn(params, batch_stats, x, y):
    return objective(params, batch_stats, x, y, key, True)[0]

  data = experiment.dataset
  return loss_fn, state.params, state.batch_stats, data.x_train[:3], data.y_train[:3]


def check(dtype: str, seed: int):
  """The report of one check in ``dtype`` (with the h sweep)."""
  from research.checks import check_gradients
  loss_fn, params, batch_stats, x, y = problem(seed)
  # float64: the checker casts the float32 arrays itself (x64 may be off outside the check).
  cast = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)
  with warnings.catch_warnings(), np.errstate(all="ignore"):
    # float32 at h <= 1e-8: x + h == x, the quotient is 0/0 (NaN, shown as a gap in the figure).
    warnings.simplefilter("ignore", RuntimeWarning)
    return check_gradients(loss_fn, cast(params), cast(batch_stats), cast(x), jnp.asarray(y),
                           float64=dtype == "float64", h_sweep=True, seed=seed,
                           coords_per_leaf=10, batch_argnums=(2, 3), name=f"tanh MLP, {dtype}")


def errors(report) -> np.ndarray:
  """Every coordinate's relative error at the report's h (none crosses a kink: tanh)."""
  return np.concatenate([leaf.rel_error[~leaf.crossed_kink] for leaf in report.leaves])


def graded_max(report) -> float:
  """The largest error the checker grades (its table's 'max rel err' over the leaves)."""
  return float(max(leaf.max_rel_error for leaf in report.leaves))


def run(ctx: core.Context) -> core.Outcome:
  medians = {d: [] for d in DTYPES}
  maxima = {d: [] for d in DTYPES}
  graded = []
  sweeps = {d: [] for d in DTYPES}
  hs = None
  for seed in range(ctx.settings.seeds):
    for dtype in DTYPES:
      report = check(dtype, seed)
      e = errors(report)
      medians[dtype].append(float(np.median(e)))
      maxima[dtype].append(float(np.max(e)))
      if dtype == "float64":
        graded.append(graded_max(report))
      hs = np.array([row.h for row in report.sweep])
      sweeps[dtype].append([row.median_rel_error for row in report.sweep])
  conditions = [
      core.condition("float32 median relative error at h=1e-5", medians["float32"], ">", 1e-4,
                     hint="float32 resolves differences of ~1e-7 * |f| / h"),
      core.condition("float64 graded max relative error at h=1e-5", graded, "<", 1e-7),
  ]
  fig, axes = figures.figure(2, size=(5.2, 4.4))
  order = np.argsort(hs)
  for dtype, color in zip(DTYPES, ("tab:red", "tab:blue")):
    figures.seed_band(axes[0, 0], hs[order], np.array(sweeps[dtype])[:, order], color=color,
                      marker="o", label=f"{dtype} (median)")
  for level, name in ((1e-2, "probably wrong"), (1e-4, "uncomfortable"), (1e-7, "good below")):
    for ax in axes[0]:
      ax.axhline(level, color="0.5", linestyle=":", linewidth=1)
    axes[0, 0].text(1e-12, level * 1.3, name, fontsize=7, color="0.4")
  axes[0, 0].axvline(1e-5, color="k", linewidth=0.8)
  axes[0, 0].set(xscale="log", yscale="log", xlabel="h", ylabel="median relative error",
                 title="same correct gradient, two precisions")
  axes[0, 0].legend(fontsize=8, loc="lower left")
  ax = axes[0, 1]
  positions = np.arange(len(DTYPES))
  for i, dtype in enumerate(DTYPES):
    for seed in range(ctx.settings.seeds):
      ax.scatter([i - 0.1], [medians[dtype][seed]], color="tab:gray", marker="o", s=25)
      ax.scatter([i + 0.1], [maxima[dtype][seed]], color="k", marker="^", s=25)
      if dtype == "float64":
        ax.scatter([i + 0.25], [graded[seed]], color="tab:blue", marker="s", s=25)
  ax.scatter([], [], color="tab:gray", marker="o", label="median over coordinates")
  ax.scatter([], [], color="k", marker="^", label="max over coordinates")
  ax.scatter([], [], color="tab:blue", marker="s", label="max the checker grades")
  ax.set(xticks=positions, xticklabels=DTYPES, yscale="log", ylabel="relative error at h=1e-5",
         title="per seed, h = 1e-5 (the checker's default)", xlim=(-0.6, 1.6))
  ax.legend(fontsize=8)
  measured = (f"at h=1e-5: float32 median {core.stat(medians['float32'])} (max "
              f"{core.stat(maxima['float32'])}); float64 graded max {core.stat(graded)} (raw max "
              f"{core.stat(maxima['float64'])}, tiny gradients included)")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"hs": hs.tolist(), "median": medians, "max": maxima,
                       "graded_max_float64": graded,
                       "sweep_median": sweeps})


CLAIM = core.Claim(2, "precision", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
