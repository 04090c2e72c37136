"""Claim 15 (``batch_norm``): batch norm learns faster and depends less on the init scale.

The scale is swept finely: every layer drawn from N(0, std^2) (``model.init = normal``,
``model.init_std``) on a log grid from 1e-3 to 10^0.5, each std a member of the same
``train_members`` program (with He as the reference for "faster"). Before the library had the
``normal`` scheme, the scales were the four named schemes (std 0.01, Xavier, He, std 1): the
"robust" condition's range is now taken over the sweep, a wider span (1e-3 .. 3.16 instead of
0.01 .. 1) that holds std 0.01 and std 1 themselves and passes near Xavier and He.
"""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures
from research.playbook.claims import init as init_claim

TITLE = "Batch norm: faster, and robust to the init scale"
SECTION = "Part 2, Batch normalization"
STATEMENT = ("Batch normalization forces the activations to a unit gaussian at the start of "
             "training; networks that use it are significantly more robust to bad "
             "initialization.")
EXPERIMENT = ("The 5-layer, 100-unit ReLU net of claim 14 (SGD momentum 0.9, lr 0.01, output "
              "layer drawn like the others) with and without batch norm (model.batch_norm); "
              "each over a log grid of init scales (model.init 'normal': every weight ~ N(0, "
              "std^2), std = 10^-3 .. 10^0.5, `stds` = log10 std) plus He init, and the seeds: "
              "two research.train.train_members programs (batch norm is not a member field; "
              "model.init and model.init_std are). A member stopped for divergence before its "
              "first epoch counts as chance (0.1).")
RULE = ("Per seed: faster: with He init, mean training loss over the epochs, no BN - BN > 0; "
        "less dependent on the scale: the range (max - min) of the best validation accuracy over "
        "the init scales of the sweep, no BN - BN > 0.")
SETTINGS = {"tiny": {"seeds": 1, "epochs": 2, "layers": 1, "stds": (-2.0, 0.0)},
            "short": {"seeds": 2, "epochs": 10, "layers": 5,
                      "stds": tuple(np.arange(-3.0, 0.51, 0.5))},
            "full": {"seeds": 3, "epochs": 30, "layers": 5,
                     "stds": tuple(np.arange(-3.0, 0.51, 0.25))}}
#: He's std of the 100-unit layers, sqrt(2 / 100), where the figure draws its point.
HE_STD = float(np.sqrt(2 / 100))


def train(settings, batch_norm: bool) -> tuple[np.ndarray, np.ndarray]:
  """``(best validation accuracy (seeds, len(stds) + 1), He's training loss (seeds, epochs))``:
  the sweep's scales, then He (last column)."""
  scales = 10.0 ** np.array(settings.stds)
  variants = [{"model.init": "normal", "model.init_std": float(std)} for std in scales]
  base = init_claim.base_config(settings.epochs, batch_norm, settings.layers)
  runs = engine.sweep(base, variants + [{"model.init": "he"}], settings.seeds)
  return runs.best_val(init_claim.CHANCE), runs.curves("train_loss", settings.epochs)[:, -1]


def run(ctx: core.Context) -> core.Outcome:
  s = ctx.settings
  scales = 10.0 ** np.array(s.stds)
  out = {bn: train(s, bn) for bn in (False, True)}
  best = {bn: out[bn][0][:, :-1] for bn in out}
  he_best = {bn: out[bn][0][:, -1] for bn in out}
  with np.errstate(invalid="ignore"):
    area = {bn: np.nanmean(np.where(np.isfinite(out[bn][1]), out[bn][1], np.nan), axis=1)
            for bn in out}
  spread = {bn: best[bn].max(axis=1) - best[bn].min(axis=1) for bn in out}
  conditions = [
      core.condition("He init, mean training loss over the epochs: no BN - BN",
                     area[False] - area[True], ">", 0.0,
                     hint="one learning rate (0.01, fine for the plain net) for both: batch "
                     "norm's gain is mostly that it tolerates higher rates and bad inits, and "
                     "He init already keeps this 5-layer net well scaled"),
      core.condition("range of best val accuracy over the init scales: no BN - BN",
                     spread[False] - spread[True], ">", 0.0),
  ]
  fig, axes = figures.figure(2, size=(5.2, 4.2))
  names = {False: "without batch norm", True: "with batch norm"}
  for bn, color in ((False, "tab:gray"), (True, "tab:purple")):
    figures.seed_band(axes[0, 0], scales, best[bn], color=color, marker="o", label=names[bn])
    axes[0, 0].scatter(np.full(s.seeds, HE_STD), he_best[bn], color=color, marker="*", s=90,
                       zorder=3, label=f"He, {names[bn]}")
    figures.seed_band(axes[0, 1], np.arange(1, s.epochs + 1), out[bn][1], color=color,
                      label=names[bn])
  axes[0, 0].set(xscale="log", xlabel="init std of every layer (N(0, std^2))",
                 ylabel="best validation accuracy", ylim=(0, 1.02), title="accuracy vs init scale")
  axes[0, 0].legend(fontsize=7, loc="lower center")
  axes[0, 1].set(yscale="log", xlabel="epoch", ylabel="training loss", title="He init")
  axes[0, 1].legend(fontsize=8)
  measured = (f"range of best val accuracy over init std {core.fmt(scales[0])}.."
              f"{core.fmt(scales[-1])} ({scales.size} scales): no BN {core.stat(spread[False])}, "
              f"BN {core.stat(spread[True])}; He mean training loss no BN "
              f"{core.stat(area[False])}, BN {core.stat(area[True])}")
  notes = ["best val accuracy per init std (mean over seeds), no BN / BN: " + ", ".join(
      f"{core.fmt(std)}: {np.mean(best[False][:, j]):.3f} / {np.mean(best[True][:, j]):.3f}"
      for j, std in enumerate(scales))]
  numbers = {("bn" if bn else "no_bn"): {"best_val": best[bn].tolist(),
                                         "he_best_val": he_best[bn].tolist(),
                                         "he_mean_train_loss": area[bn].tolist()} for bn in out}
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"init_std": scales.tolist(), **numbers}, notes)


CLAIM = core.Claim(15, "batch_norm", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
