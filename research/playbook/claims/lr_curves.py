"""Claim 8 (``lr_curves``): the learning-rate cartoon: very high explodes, high plateaus at a
worse loss, low decays almost linearly, a good one in between."""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Learning-rate curves: explode, plateau, linear, good"
SECTION = "Part 3, Babysitting the learning process (loss function)"
STATEMENT = ("The loss over time for different learning rates: low learning rates give almost "
             "linear improvements, high ones look more exponential; higher rates decay the loss "
             "faster but get stuck at worse values (the energy bounces around chaotically); very "
             "high rates make the loss explode; a good rate is in between.")
EXPERIMENT = ("research.train.train_members on digits (MLP 64-100-10, He, plain SGD, batch 64): "
              "one member per (learning rate, seed), learning rates 10^-3 .. 10^1 in half "
              "decades; a member whose loss exceeds 10x its first loss or turns NaN is stopped "
              "(exploded). Per seed: 'good' = the learning rate with the lowest final training "
              "loss, 'high' = the largest that did not explode, 'low' = the smallest.")
RULE = ("Per seed (1 = yes): (1) the largest rate explodes (> 0.5); (2) 'good' lies strictly "
        "between 'low' and 'high' (> 0.5); (3) final loss of 'high' / final loss of 'good' > 1.5 "
        "(stuck at a worse value); (4) 'high' plateaus: its loss fell less than 25% over the "
        "second half of training (relative drop < 0.25); (5) 'low' decays almost linearly: R^2 "
        "of a straight line through its epoch losses > research.monitor.Thresholds().linear_r2 "
        "(0.98, the monitor's 'linear' rule).")
SETTINGS = {"tiny": {"seeds": 1, "epochs": 2, "lrs": (-1.0, 1.0)},
            "short": {"seeds": 2, "epochs": 15, "lrs": tuple(np.arange(-3.0, 1.01, 0.5))},
            "full": {"seeds": 3, "epochs": 30, "lrs": tuple(np.arange(-3.0, 1.01, 0.5))}}


def r_squared(y: np.ndarray) -> float:
  """R^2 of the least-squares line through ``y`` against its index."""
  x = np.arange(y.size, dtype=np.float64)
  fit = np.polyval(np.polyfit(x, y, 1), x)
  total = np.sum((y - y.mean()) ** 2)
  return float(1.0 - np.sum((y - fit) ** 2) / total) if total > 0 else 0.0


def run(ctx: core.Context) -> core.Outcome:
  from research.monitor import Thresholds
  s = ctx.settings
  lrs = 10.0 ** np.array(s.lrs)
  base = engine.config({"model.hidden_sizes": (100,), "optimizer.name": "sgd",
                        "train.num_epochs": s.epochs})
  runs = engine.sweep(base, [{"optimizer.learning_rate": float(lr)} for lr in lrs], s.seeds)
  losses = runs.curves("train_loss", s.epochs)
  exploded = runs.diverged()
  linear_r2 = Thresholds().linear_r2
  rows = {k: [] for k in ("explodes", "between", "ratio", "drop", "r2", "good", "high")}
  for seed in range(s.seeds):
    alive = np.flatnonzero(~exploded[seed])
    final = losses[seed, :, -1]
    good = int(alive[np.argmin(final[alive])])
    high = int(alive.max())
    curve_high = losses[seed, high]
    half = curve_high[s.epochs // 2 - 1] if s.epochs > 1 else curve_high[0]
    rows["explodes"].append(float(exploded[seed, -1]))
    rows["between"].append(float(0 < good < high))
    rows["ratio"].append(final[high] / final[good])
    rows["drop"].append((half - curve_high[-1]) / half)
    rows["r2"].append(r_squared(losses[seed, 0]))
    rows["good"].append(lrs[good])
    rows["high"].append(lrs[high])
  conditions = [
      core.condition("largest rate explodes (1 = yes)", rows["explodes"], ">", 0.5),
      core.condition("good rate strictly between low and high (1 = yes)", rows["between"], ">",
                     0.5, hint="on digits the largest stable rate is also the best: the next "
                     "half decade explodes, so the grid holds no 'high but stable' rate"),
      core.condition("final loss high / good", rows["ratio"], ">", 1.5,
                     hint="the largest stable rate may still settle low on an easy problem"),
      core.condition("relative drop of the high rate's loss over the second half",
                     rows["drop"], "<", 0.25,
                     hint="the high rate kept improving instead of getting stuck"),
      core.condition("R^2 of a line through the low rate's losses", rows["r2"], ">", linear_r2),
  ]
  fig, axes = figures.figure(2, size=(5.6, 4.4))
  import matplotlib.pyplot as plt
  colors = plt.cm.viridis(np.linspace(0, 0.95, len(lrs)))
  epochs = np.arange(1, s.epochs + 1)
  ax = axes[0, 0]
  for j, lr in enumerate(lrs):
    figures.seed_band(ax, epochs, losses[:, j], color=colors[j], label=f"lr {lr:.3g}")
    if exploded[:, j].any():
      last = [np.flatnonzero(np.isfinite(losses[k, j])) for k in range(s.seeds)]
      for k, idx in enumerate(last):
        if exploded[k, j]:
          x_end = idx[-1] + 1 if idx.size else 0
          y_end = losses[k, j, idx[-1]] if idx.size else losses[k, 0, 0]
          ax.plot([x_end + 0.5], [y_end], "x", color=colors[j], markersize=9, mew=2)
  ax.set(yscale="log", xlabel="epoch", ylabel="training loss (epoch mean)",
         title="plain SGD on digits; x = exploded (stopped)")
  ax.legend(fontsize=7, ncol=2)
  ax = axes[0, 1]
  final = np.where(exploded, np.nan, losses[:, :, -1])
  for seed in range(s.seeds):
    ax.plot(lrs, final[seed], "o-", color="tab:blue", alpha=0.6)
    ax.plot(lrs[exploded[seed]], np.full(exploded[seed].sum(), np.nanmax(final) * 2), "x",
            color="tab:red", markersize=9, mew=2)
  ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="final training loss",
         title="final loss vs rate (x: exploded)")
  figures.note(ax, [f"good lr {core.stat(rows['good'])}", f"high lr {core.stat(rows['high'])}",
                    f"high/good final {core.stat(rows['ratio'])}",
                    f"low lr R^2 {core.stat(rows['r2'])}"], loc="upper center")
  measured = (f"good lr {core.stat(rows['good'])}; high lr {core.stat(rows['high'])} ends "
              f"{core.stat(rows['ratio'])}x good's loss, dropping {core.stat(rows['drop'])} over "
              f"its second half; low lr R^2 {core.stat(rows['r2'])}; largest lr exploded in "
              f"{int(np.sum(rows['explodes']))}/{s.seeds}")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"lrs": lrs.tolist(), "losses": losses.tolist(),
                       "exploded": exploded.tolist(), **{k: list(map(float, v))
                                                          for k, v in rows.items()}})


CLAIM = core.Claim(8, "lr_curves", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
