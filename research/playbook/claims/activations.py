"""Claim 13 (``activations``): activation distributions of a 5-layer net: std 1 saturates a
sigmoid at 0/1, std 0.01 collapses it to 0.5, Xavier keeps a spread; tanh + Xavier is a bell."""
from __future__ import annotations

import functools

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Activation histograms: saturated, collapsed, spread"
SECTION = "Part 2, Weight initialization (calibrating the variances; the lecture's histograms)"
STATEMENT = ("With small random numbers (std 0.01) the activations of a deep net shrink toward "
             "the nonlinearity's centre (0.5 for a sigmoid) layer after layer; with large ones "
             "(std 1) the units saturate at 0 and 1; Xavier's 1/sqrt(n) scaling keeps a healthy "
             "spread in every layer (with tanh, a bell shape around 0).")
EXPERIMENT = ("The sown activations (intermediates act_i) of a 5-hidden-layer digits MLP "
              "(64-100-100-100-100-100-10) at initialization on 512 training examples "
              "(build_experiment, init_state, research.train.losses.apply_model with capture), "
              "per layer summarized by research.monitor.stats.activation_statistics (saturated "
              "fraction: within 0.01 of the sigmoid's 0/1 or tanh's -1/1; mean, std, histogram). "
              "Four nets: sigmoid with init 'unit' (std 1), 'small' (std 0.01) and 'xavier'; "
              "tanh with 'xavier'. Per seed (initialization).")
RULE = ("In the last (5th) hidden layer, per seed: sigmoid std 1: saturated fraction > 0.5; "
        "sigmoid std 0.01: fraction within 0.5 +- 0.05 > 0.99; sigmoid Xavier: saturated "
        "fraction < 0.05 and std > 0.05; tanh Xavier: saturated fraction < 0.05 and fraction "
        "with |h| < 0.25 minus fraction with |h| > 0.75 > 0 (peaked at 0: a bell).")
SETTINGS = {"tiny": {"seeds": 1, "layers": 2}, "short": {"seeds": 3, "layers": 5},
            "full": {"seeds": 5, "layers": 5}}
LABELS = {"unit": "std 1", "small": "std 0.01", "xavier": "xavier"}
NETS = (("sigmoid", "unit"), ("sigmoid", "small"), ("sigmoid", "xavier"), ("tanh", "xavier"))
BINS = 30


def activations(activation: str, init: str, seeds: range, layers: int
                ) -> list[list[np.ndarray]]:
  """Per seed, per hidden layer: the activations on 512 training examples at initialization."""
  import jax
  from research.monitor.stats import activation_layers
  from research.train import init_state
  from research.train.losses import apply_model
  cfg = engine.config({"model.hidden_sizes": (100,) * layers, "model.activation": activation,
                       "model.init": init, "model.output_scale": 1.0})
  experiment = engine.experiment(cfg)
  x = experiment.dataset.x_train[:512]
  forward = jax.jit(lambda params, batch_stats, key: apply_model(
      experiment.model, params, batch_stats, x, key, False, capture=True)[1])
  out = []
  for seed in seeds:
    state = init_state(experiment, seed=seed)
    sown = activation_layers(forward(state.params, state.batch_stats, state.rng))
    out.append([np.asarray(sown[f"act_{i}"]) for i in range(layers)])
  return out


@functools.lru_cache(maxsize=None)
def _statistics():
  import jax
  from research.monitor.stats import activation_statistics
  return jax.jit(activation_statistics,
                 static_argnames=("activation", "bins", "value_range", "max_values"))


def summary(h: np.ndarray, activation: str) -> dict[str, float]:
  """The monitor's statistics of one layer plus the shape measures of the rule."""
  bounds = (0.0, 1.0) if activation == "sigmoid" else (-1.0, 1.0)
  stats = _statistics()(h, activation=activation, bins=BINS, value_range=bounds,
                        max_values=None)
  return {"saturated": float(stats["saturated_fraction"]), "std": float(stats["act_std"]),
          "mean": float(stats["act_mean"]), "counts": np.asarray(stats["act_counts"]).tolist(),
          "near_half": float(np.mean(np.abs(h - 0.5) < 0.05)),
          "outer_tenth": float(np.mean(np.abs(h - np.mean(bounds))
                                       > 0.4 * (bounds[1] - bounds[0]))),
          "bell": float(np.mean(np.abs(h) < 0.25) - np.mean(np.abs(h) > 0.75))}


def run(ctx: core.Context) -> core.Outcome:
  seeds = range(ctx.settings.seeds)
  stats = {}
  for activation, init in NETS:
    acts = activations(activation, init, seeds, ctx.settings.layers)
    stats[(activation, init)] = [[summary(layer, activation) for layer in per_seed]
                                 for per_seed in acts]
  last = lambda net, key: [per_seed[-1][key] for per_seed in stats[net]]
  conditions = [
      core.condition("sigmoid std 1: saturated fraction, last layer",
                     last(("sigmoid", "unit"), "saturated"), ">", 0.5,
                     hint="'saturated' means within 0.01 of 0 or 1 (|pre-activation| > 4.6): "
                     "with ~50 active inputs of std 1 the pre-activations have std ~7, so about "
                     "half of them, not most, are that far out; the histogram is still "
                     "U-shaped"),
      core.condition("sigmoid std 0.01: fraction within 0.5 +- 0.05, last layer",
                     last(("sigmoid", "small"), "near_half"), ">", 0.99),
      core.condition("sigmoid Xavier: saturated fraction, last layer",
                     last(("sigmoid", "xavier"), "saturated"), "<", 0.05),
      core.condition("sigmoid Xavier: std, last layer", last(("sigmoid", "xavier"), "std"), ">",
                     0.05),
      core.condition("tanh Xavier: saturated fraction, last layer",
                     last(("tanh", "xavier"), "saturated"), "<", 0.05),
      core.condition("tanh Xavier: frac(|h| < 0.25) - frac(|h| > 0.75), last layer",
                     last(("tanh", "xavier"), "bell"), ">", 0.0),
  ]
  layers = ctx.settings.layers
  fig, axes = figures.figure(layers, len(NETS), size=(max(2.3, 7.0 / layers), 1.7),
                             sharey="row")
  for row, (activation, init) in enumerate(NETS):
    lo, hi = (0.0, 1.0) if activation == "sigmoid" else (-1.0, 1.0)
    centres = lo + (np.arange(BINS) + 0.5) * (hi - lo) / BINS
    for i in range(layers):
      ax = axes[row, i]
      counts = np.array([per_seed[i]["counts"] for per_seed in stats[(activation, init)]])
      density = counts.mean(axis=0) / counts.sum(axis=1).mean()
      ax.bar(centres, density, width=(hi - lo) / BINS, color="tab:blue")
      s = stats[(activation, init)][0][i]
      ax.set_title(f"layer {i + 1}: std {s['std']:.2g}, sat {s['saturated']:.0%}", fontsize=8)
      ax.set_xlim(lo, hi)
      ax.tick_params(labelsize=7)
    axes[row, 0].set_ylabel(f"{activation}\n{LABELS[init]}", fontsize=9)
  measured = "; ".join([
      f"last layer: sigmoid std 1 saturated {core.stat(last(('sigmoid', 'unit'), 'saturated'))}",
      f"sigmoid std 0.01 within 0.5+-0.05 {core.stat(last(('sigmoid', 'small'), 'near_half'))}",
      f"sigmoid Xavier std {core.stat(last(('sigmoid', 'xavier'), 'std'))}, saturated "
      f"{core.stat(last(('sigmoid', 'xavier'), 'saturated'))}",
      f"tanh Xavier bell score {core.stat(last(('tanh', 'xavier'), 'bell'))}"])
  numbers = {f"{a}/{i}": [[{k: v for k, v in layer.items() if k != "counts"} for layer in s]
                          for s in per] for (a, i), per in stats.items()}
  notes = ["last layer, share of values in the outer 10% of the range at each end (0..0.1 and "
           "0.9..1 for a sigmoid): " + ", ".join(
               f"{a} {LABELS[i]} "
               f"{core.stat(last((a, i), 'outer_tenth'))}" for a, i in NETS)]
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      numbers, notes)


CLAIM = core.Claim(13, "activations", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
