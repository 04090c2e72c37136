"""Claim 15 (``batch_norm``): batch norm learns faster and depends less on the init scale."""
from __future__ import annotations

import numpy as np

from research.playbook import core, figures
from research.playbook.claims import init as init_claim

TITLE = "Batch norm: faster, and robust to the init scale"
SECTION = "Part 2, Batch normalization"
STATEMENT = ("Batch normalization forces the activations to a unit gaussian at the start of "
             "training; networks that use it are significantly more robust to bad "
             "initialization.")
EXPERIMENT = ("The 5-layer, 100-unit ReLU net of claim 14 (SGD momentum 0.9, lr 0.01, output "
              "layer drawn like the others) with and without batch norm (model.batch_norm), each "
              "over the four init scales of research.models (std 0.01, Xavier, He, std 1) and "
              "the seeds: two research.train.train_members programs (batch norm is not a member "
              "field). A member stopped for divergence before its first epoch counts as chance "
              "(0.1).")
RULE = ("Per seed: faster: with He init, mean training loss over the epochs, no BN - BN > 0; "
        "less dependent on the scale: the range (max - min) of the best validation accuracy over "
        "the four scales, no BN - BN > 0.")
SETTINGS = {"tiny": {"seeds": 1, "epochs": 2, "layers": 1},
            "short": {"seeds": 2, "epochs": 10, "layers": 5},
            "full": {"seeds": 3, "epochs": 30, "layers": 5}}
INITS = ("small", "xavier", "he", "unit")
#: The first layer's std of each scheme (64 inputs, 100 units), for the figure's x axis.
FIRST_STD = {"small": 0.01, "xavier": float(np.sqrt(2 / 164)), "he": float(np.sqrt(2 / 64)),
             "unit": 1.0}


def run(ctx: core.Context) -> core.Outcome:
  s = ctx.settings
  out = {bn: init_claim.train_inits(s.epochs, s.seeds, INITS, batch_norm=bn,
                                     layers=s.layers)
         for bn in (False, True)}
  he = INITS.index("he")
  area = {bn: np.nanmean(np.where(np.isfinite(out[bn][0][:, he]), out[bn][0][:, he], np.nan),
                         axis=1) for bn in out}
  spread = {bn: out[bn][2].max(axis=1) - out[bn][2].min(axis=1) for bn in out}
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
  x = [FIRST_STD[i] for i in INITS]
  for bn, color in ((False, "tab:gray"), (True, "tab:purple")):
    best = out[bn][2]
    for k in range(s.seeds):
      axes[0, 0].plot(x, best[k], "o-", color=color, alpha=0.6,
                      label=("with" if bn else "without") + " batch norm" if k == 0 else None)
    epochs = np.arange(1, s.epochs + 1)
    figures.seed_band(axes[0, 1], epochs, out[bn][0][:, he], color=color,
                      label=("with" if bn else "without") + " batch norm")
  axes[0, 0].set(xscale="log", xlabel="init std of the first layer (small, Xavier, He, unit)",
                 ylabel="best validation accuracy", ylim=(0, 1.02), title="accuracy vs init scale")
  axes[0, 0].legend(fontsize=8, loc="lower center")
  axes[0, 1].set(yscale="log", xlabel="epoch", ylabel="training loss", title="He init")
  axes[0, 1].legend(fontsize=8)
  measured = (f"range of best val accuracy over scales: no BN {core.stat(spread[False])}, BN "
              f"{core.stat(spread[True])}; He mean training loss no BN "
              f"{core.stat(area[False])}, BN {core.stat(area[True])}")
  numbers = {("bn" if bn else "no_bn"): {"best_val": out[bn][2].tolist(),
                                         "diverged": out[bn][3].tolist()} for bn in out}
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, 15, TITLE, conditions),
                      {"inits": list(INITS), **numbers})


CLAIM = core.Claim(15, "batch_norm", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
