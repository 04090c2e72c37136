"""Claim 12 (``zero_init``): zero or constant weights do not break symmetry: the units of a
layer stay identical and the net does not learn.

Single runs: no ``model.init`` scheme gives zero or constant weights, so those starts are written
as the run's epoch-0 checkpoint (``engine.train_from_state``) and trained by the engine from there.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from research.playbook import core, engine, figures

TITLE = "Zero / constant init: no symmetry breaking, no learning"
SECTION = "Part 2, Weight initialization (pitfall: all zero initialization)"
STATEMENT = ("Do not set all weights to zero: if every neuron computes the same output, they "
             "all compute the same gradients and undergo exactly the same updates; there is no "
             "source of asymmetry between neurons.")
EXPERIMENT = ("research.train.train_and_evaluate of the digits MLP 64-64-64-10 (ReLU, Adam "
              "1e-3, batch 64) from three starts: every parameter 0 ('zeros'), every weight 0.1 "
              "and every bias 0 ('constant'), and the default He init (control). The constant "
              "starts are the He start with its parameters replaced, trained by the engine from "
              "an epoch-0 checkpoint (research.playbook.engine.train_from_state). Measured: the "
              "units' spread after training (per hidden layer, max_j ||W[:, j] - W[:, 0]|| / "
              "(||W[:, 0]|| + 1e-12) over the incoming weights, max over the layers) and the best "
              "validation accuracy; per seed (data order; the He init too).")
RULE = ("Per seed: spread after training < 1e-4 for zeros and for constant (identical up to "
        "float32 rounding); best validation accuracy < 0.5 for zeros and for constant (does not "
        "learn); the He control reaches > 0.9.")
SETTINGS = {"tiny": {"seeds": 1, "epochs": 1}, "short": {"seeds": 2, "epochs": 8},
            "full": {"seeds": 3, "epochs": 20}}
STARTS = ("zeros", "constant", "he")
CONSTANT = 0.1


def spread(params) -> float:
  """Max over hidden layers of max_j ||W[:, j] - W[:, 0]|| / (||W[:, 0]|| + 1e-12)."""
  kernels = engine.kernels(engine.to_numpy(params))
  hidden = sorted(kernels)[:-1]   # the output layer's columns are classes, not units
  out = 0.0
  for name in hidden:
    w = kernels[name]
    out = max(out, float(np.max(np.linalg.norm(w - w[:, :1], axis=0))
                         / (np.linalg.norm(w[:, 0]) + 1e-12)))
  return out


def start(cfg, kind: str, seed: int):
  """The train state a run of ``cfg`` starts from, with its parameters replaced for ``kind``."""
  from research.train import losses
  experiment, state = engine.initial_state(cfg, seed)
  if kind == "he":
    return state

  def value(path, leaf):
    weight = losses.is_weight(path)
    return jnp.full_like(leaf, CONSTANT if (kind == "constant" and weight) else 0.0)

  params = jax.tree_util.tree_map_with_path(value, state.params)
  return state.replace(params=params, opt_state=experiment.tx.init(params))


def run(ctx: core.Context) -> core.Outcome:
  s = ctx.settings
  spreads = np.zeros((s.seeds, len(STARTS)))
  best = np.zeros((s.seeds, len(STARTS)))
  val = np.full((s.seeds, len(STARTS), s.epochs), np.nan)
  first_layer = {}
  for seed in range(s.seeds):
    cfg = engine.config({"model.hidden_sizes": (64, 64), "train.num_epochs": s.epochs,
                         "seed": seed})
    for j, kind in enumerate(STARTS):
      workdir = os.path.join(ctx.workdir, f"{kind}_seed{seed}")
      if kind == "he":
        run_ = engine.single(cfg, workdir)
      else:
        run_ = engine.train_from_state(cfg, workdir, start(cfg, kind, seed))
      history, final = run_.history, run_.state.params
      spreads[seed, j] = spread(final)
      curve = engine.curve(history, "val_accuracy")
      val[seed, j, :curve.size] = curve
      best[seed, j] = np.nanmax(curve)
      if seed == 0:
        first_layer[kind] = engine.kernels(engine.to_numpy(final))["Dense_0"]
  conditions = []
  for j, kind in enumerate(STARTS[:2]):
    conditions.append(core.condition(f"unit spread after training, {kind}", spreads[:, j], "<",
                                     1e-4))
  for j, kind in enumerate(STARTS[:2]):
    conditions.append(core.condition(f"best validation accuracy, {kind}", best[:, j], "<", 0.5,
                                     hint="a symmetric net is a net of width 1: it can still "
                                     "separate a few classes"))
  conditions.append(core.condition("best validation accuracy, He (control)", best[:, 2], ">",
                                   0.9))
  fig, axes = figures.figure(2, 2, size=(5.4, 3.8))
  epochs = np.arange(1, s.epochs + 1)
  colors = ("tab:red", "tab:orange", "tab:blue")
  for j, kind in enumerate(STARTS):
    figures.seed_band(axes[0, 0], epochs, val[:, j], color=colors[j], marker="o", label=kind)
  axes[0, 0].set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1),
                 title="digits MLP 64-64-64-10, Adam")
  axes[0, 0].legend(fontsize=8)
  ax = axes[0, 1]
  for j in range(len(STARTS)):
    ax.scatter(np.full(s.seeds, j), np.maximum(spreads[:, j], 1e-12), color=colors[j], s=40)
  ax.axhline(1e-4, color="k", linestyle="--", linewidth=1, label="identical below (1e-4)")
  ax.set(xticks=range(len(STARTS)), xticklabels=STARTS, yscale="log", ylim=(1e-13, 1e2),
         ylabel="spread of the units' incoming weights", title="after training (0 shown at 1e-12)")
  ax.legend(fontsize=8)
  for ax, kind in zip(axes[1], ("constant", "he")):
    image = first_layer[kind]
    ax.imshow(image, aspect="auto", cmap="RdBu_r", vmin=-np.abs(image).max(),
              vmax=np.abs(image).max())
    ax.set(xlabel="hidden unit", ylabel="input pixel",
           title=f"first-layer weights after training, {kind} start")
  measured = ("unit spread " + ", ".join(f"{k} {core.stat(spreads[:, j])}"
                                         for j, k in enumerate(STARTS))
              + "; best val accuracy " + ", ".join(f"{k} {core.stat(best[:, j])}"
                                                   for j, k in enumerate(STARTS)))
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, 12, TITLE, conditions),
                      {"starts": list(STARTS), "spread": spreads.tolist(),
                       "best_val": best.tolist()})


CLAIM = core.Claim(12, "zero_init", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
