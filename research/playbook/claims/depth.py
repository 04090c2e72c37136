"""Claim 3 (``depth``): the relative error of a correct gradient grows with the network's depth."""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Gradient-check errors grow with depth"
SECTION = "Part 3, Gradient checks (relative error)"
STATEMENT = ("The deeper the network, the higher the relative errors: when checking the input "
             "data of a 10-layer network a relative error of 1e-2 might be okay, because the "
             "errors build up on the way.")
EXPERIMENT = ("research.checks.check_model_gradients (float64, h = 1e-5, 3 examples, 10 "
              "coordinates per leaf) of digits tanh MLPs (Xavier) of depth 2, 5 and 10 weight "
              "layers (hidden width 32); measured: the median relative error of the first layer's "
              "weights (the farthest from the loss), per seed (initialization, coordinates).")
RULE = ("Per seed, log10(median error of depth 5 / depth 2) > 0 and log10(depth 10 / depth 5) "
        "> 0 (errors grow from each depth to the next).")
SETTINGS = {"tiny": {"seeds": 1, "depths": (2, 3)}, "short": {"seeds": 3, "depths": (2, 5, 10)},
            "full": {"seeds": 5, "depths": (2, 5, 10)}}


def first_layer_errors(depth: int, seed: int) -> tuple[float, dict[str, float]]:
  """``(median error of Dense_0/kernel, {leaf: median error})`` for one network."""
  from research.checks import check_model_gradients
  cfg = engine.config({"model.hidden_sizes": (32,) * (depth - 1), "model.activation": "tanh",
                       "model.init": "xavier", "seed": seed, "gradcheck.num_examples": 3,
                       "gradcheck.coords_per_leaf": 10})
  cfg.gradcheck.seed = seed
  report = check_model_gradients(cfg, dataset=engine.dataset(cfg))
  per_leaf = {leaf.path: leaf.median_rel_error for leaf in report.leaves}
  return per_leaf["Dense_0/kernel"], per_leaf


def run(ctx: core.Context) -> core.Outcome:
  seeds = range(ctx.settings.seeds)
  depths = tuple(ctx.settings.depths)
  first = np.zeros((len(seeds), len(depths)))
  leaves = {}
  for s in seeds:
    for j, depth in enumerate(depths):
      first[s, j], leaves[f"{depth}/{s}"] = first_layer_errors(depth, s)
  growth = np.log10(first[:, 1:] / first[:, :-1])
  conditions = [
      core.condition(f"log10(first-layer error, depth {depths[j + 1]} / depth {depths[j]})",
                     growth[:, j], ">", 0.0,
                     hint="in float64 these errors sit at the truncation/roundoff floor (~1e-9) "
                     "whatever the depth: tanh + Xavier keeps the gradients' scale, so nothing "
                     "builds up")
      for j in range(len(depths) - 1)]
  fig, axes = figures.figure(2, size=(5.0, 4.2))
  ax = axes[0, 0]
  for s in seeds:
    ax.plot(depths, first[s], "o-", color="tab:blue", alpha=0.5)
  ax.plot(depths, np.exp(np.mean(np.log(first), axis=0)), "s-", color="k", label="geometric mean")
  ax.set(yscale="log", xlabel="depth (weight layers)", ylabel="median relative error",
         title="first layer's weights (farthest from the loss)", xticks=depths)
  ax.legend(fontsize=8)
  ax = axes[0, 1]
  for depth in depths:
    per_layer = [[leaves[f"{depth}/{s}"].get(f"Dense_{i}/kernel", np.nan) for s in seeds]
                 for i in range(depth)]
    ax.plot(range(1, depth + 1), np.exp(np.nanmean(np.log(per_layer), axis=1)), "o-",
            label=f"depth {depth}")
  ax.set(yscale="log", xlabel="layer (1 = input side)", ylabel="median relative error",
         title="every layer's weights (geometric mean over seeds)")
  ax.legend(fontsize=8)
  measured = ", ".join(f"depth {d}: {core.stat(first[:, j])}" for j, d in enumerate(depths))
  return core.Outcome(conditions, "first-layer median error " + measured,
                      figures.finish(fig, ctx, conditions),
                      {"depths": list(depths), "first_layer_median": first.tolist(),
                       "per_leaf": leaves})


CLAIM = core.Claim(3, "depth", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
