"""Claim 18 (``rules``): on a real net SGD is slowest, momentum / AdaGrad / Adam faster; AdaGrad's
effective learning rate decays until it stops learning, RMSProp's does not."""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Update rules on a real net; AdaGrad stops early"
SECTION = "Part 3, Parameter updates (momentum, AdaGrad, RMSProp, Adam)"
STATEMENT = ("Momentum almost always enjoys better convergence rates than vanilla SGD on deep "
             "networks, and adaptive rates (AdaGrad, Adam) help too; but AdaGrad's monotonically "
             "decaying learning rate usually proves too aggressive and stops learning too early "
             "in deep learning, which RMSProp's moving average fixes.")
EXPERIMENT = ("research.train.train_members on digits with a deeper net (MLP 64-100x5-10, ReLU, "
              "He, batch 64): per rule (sgd, momentum 0.9, adagrad, rmsprop, adam) one program "
              "with one member per (learning rate 10^-4 .. 10^0 in half decades, seed); each "
              "rule at its best rate (lowest mean final training loss; a diverged member counts "
              "as +inf). AdaGrad's and RMSProp's effective rate lr / (sqrt(cache) + eps), median "
              "over the weights, read from the optimizer state at the end and after epoch 1 (the "
              "best rate's members trained again for one epoch).")
RULE = ("Per seed, at each rule's best rate: log10(final training loss of SGD / of X) > 0 for X "
        "in momentum, AdaGrad, Adam (SGD slowest); log10(final loss AdaGrad / RMSProp) > 0 "
        "(AdaGrad stops early); log10 of (RMSProp's effective-rate ratio end / epoch 1) minus "
        "log10 of AdaGrad's > 0 (AdaGrad's decays more).")
RULES = ("sgd", "momentum", "adagrad", "rmsprop", "adam")
#: tiny: three rules (fewer programs to compile), enough to exercise every part of the code.
SETTINGS = {"tiny": {"seeds": 1, "epochs": 1, "lrs": (-2.0,), "layers": 1,
                     "rules": ("sgd", "adagrad", "rmsprop")},
            "short": {"seeds": 2, "epochs": 10, "lrs": (-4.0, -3.0, -2.0, -1.0, 0.0), "layers": 5,
                      "rules": RULES},
            "full": {"seeds": 3, "epochs": 30, "lrs": tuple(np.arange(-4.0, 0.01, 0.5)),
                     "layers": 5, "rules": RULES}}
ADAPTIVE = ("adagrad", "rmsprop")


def train(name: str, lrs: np.ndarray, seeds: int, epochs: int, layers: int = 5) -> engine.Sweep:
  """One program of rule ``name``: a member per (seed, learning rate)."""
  base = engine.config({"model.hidden_sizes": (100,) * layers, "optimizer.name": name,
                        "optimizer.mu": 0.9, "train.num_epochs": epochs})
  return engine.sweep(base, [{"optimizer.learning_rate": float(lr)} for lr in lrs], seeds)


def effective_rates(runs: engine.Sweep, lrs: np.ndarray) -> np.ndarray:
  """``(seeds, len(lrs))``: median over the weights of lr / (sqrt(cache) + eps)."""
  from research import optim
  cache = engine.kernels(optim.get_cache(runs.result.state.opt_state))
  eps = float(runs.result.configs[0].optimizer.eps)
  values = runs.split(np.concatenate([np.asarray(c, np.float64).reshape(c.shape[0], -1)
                                      for c in cache.values()], axis=1))
  return np.median(lrs[:, None] / (np.sqrt(values) + eps), axis=2)


def run(ctx: core.Context) -> core.Outcome:
  s = ctx.settings
  lrs = 10.0 ** np.array(s.lrs)
  final, curves, best, rates = {}, {}, {}, {}
  for name in s.rules:
    runs = train(name, lrs, s.seeds, s.epochs, s.layers)
    loss = runs.curves("train_loss", s.epochs)
    last = np.where(runs.diverged() | ~np.isfinite(loss[..., -1]), np.inf, loss[..., -1])
    with np.errstate(invalid="ignore"):
      j = int(np.argmin(np.mean(last, axis=0)))
    best[name] = lrs[j]
    final[name] = last[:, j]
    curves[name] = loss[:, j]
    if name in ADAPTIVE:
      first = train(name, lrs[j:j + 1], s.seeds, 1, s.layers)
      rates[name] = effective_rates(runs, lrs)[:, j] / effective_rates(first, lrs[j:j + 1])[:, 0]
  log_ratio = lambda a, b: np.log10(final[a] / final[b])
  conditions = [core.condition(f"log10(final loss SGD / {n})", log_ratio("sgd", n), ">", 0.0,
                               hint="on a coarse rate grid SGD's and momentum's best rates can "
                               "give the same effective step lr / (1 - mu)")
                for n in ("momentum", "adagrad", "adam") if n in final]
  conditions += [
      core.condition("log10(final loss AdaGrad / RMSProp)", log_ratio("adagrad", "rmsprop"), ">",
                     0.0, hint="on digits a 5-layer net is fit by AdaGrad before its rate has "
                     "decayed much"),
      core.condition("log10(effective-rate ratio RMSProp) - log10(AdaGrad), end / epoch 1",
                     np.log10(rates["rmsprop"]) - np.log10(rates["adagrad"]), ">", 0.0),
  ]
  fig, axes = figures.figure(2, size=(5.4, 4.4))
  epochs = np.arange(1, s.epochs + 1)
  colors = dict(zip(RULES, ("tab:red", "tab:orange", "tab:green", "tab:purple", "tab:blue")))
  for name in s.rules:
    figures.seed_band(axes[0, 0], epochs, curves[name], color=colors[name],
                      label=f"{name} (lr {best[name]:.2g})")
  axes[0, 0].set(yscale="log", xlabel="epoch", ylabel="training loss",
                 title="digits, MLP 64-100x5-10, each rule at its best lr")
  axes[0, 0].legend(fontsize=8)
  ax = axes[0, 1]
  for name in ADAPTIVE:
    ax.scatter(np.full(s.seeds, ADAPTIVE.index(name)), rates[name], color=colors[name], s=40)
  ax.axhline(1.0, color="k", linewidth=0.8)
  ax.set(xticks=range(len(ADAPTIVE)), xticklabels=ADAPTIVE, xlim=(-0.6, 1.6), yscale="log",
         ylabel="effective lr at the end / after epoch 1",
         title="lr / (sqrt(cache) + eps), median over weights")
  measured = (f"final training loss at the best lr {core.stats(final)}; effective-rate ratio "
              f"end/epoch 1 {core.stats(rates)}")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"best_lr": {n: float(v) for n, v in best.items()},
                       "final_loss": {n: v.tolist() for n, v in final.items()},
                       "rate_ratio": {n: v.tolist() for n, v in rates.items()}})


CLAIM = core.Claim(18, "rules", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
