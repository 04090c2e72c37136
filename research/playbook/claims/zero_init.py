"""Claim 12 (``zero_init``): zero or constant weights do not break symmetry: the units of a
layer stay identical and the net does not learn.

The three starts are config overrides (``model.init`` = ``zeros`` / ``constant`` with
``model.init_std``, or the default ``he``), all members of one ``train_members`` program.
"""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Zero / constant init: no symmetry breaking, no learning"
SECTION = "Part 2, Weight initialization (pitfall: all zero initialization)"
STATEMENT = ("Do not set all weights to zero: if every neuron computes the same output, they "
             "all compute the same gradients and undergo exactly the same updates; there is no "
             "source of asymmetry between neurons.")
EXPERIMENT = ("research.train.train_members of the digits MLP 64-64-64-10 (ReLU, Adam 1e-3, "
              "batch 64) from three starts, one member per (start, seed) in one program: "
              "model.init='zeros' (every parameter 0), model.init='constant' with init_std 0.1 "
              "and output_scale 1 (every weight 0.1, every bias 0), and the default He init "
              "(control). Measured: the units' spread after training (per hidden layer, max_j "
              "||W[:, j] - W[:, 0]|| / (||W[:, 0]|| + 1e-12) over the incoming weights, max over "
              "the layers) and the best validation accuracy; per seed (data order; the He init "
              "too).")
RULE = ("Per seed: spread after training < 1e-4 for zeros and for constant (identical up to "
        "float32 rounding); best validation accuracy < 0.5 for zeros and for constant (does not "
        "learn); the He control reaches > 0.9.")
SETTINGS = {"tiny": {"seeds": 1, "epochs": 1}, "short": {"seeds": 2, "epochs": 8},
            "full": {"seeds": 3, "epochs": 20}}
#: Each start's overrides (a member field each: model.init, init_std, output_scale).
STARTS = {"zeros": {"model.init": "zeros"},
          "constant": {"model.init": "constant", "model.init_std": 0.1, "model.output_scale": 1.0},
          "he": {}}


def spread(kernels: dict[str, np.ndarray]) -> float:
  """Max over hidden layers of max_j ||W[:, j] - W[:, 0]|| / (||W[:, 0]|| + 1e-12)."""
  hidden = sorted(kernels)[:-1]   # the output layer's columns are classes, not units
  return max(float(np.max(np.linalg.norm(w - w[:, :1], axis=0)) / (np.linalg.norm(w[:, 0]) + 1e-12))
             for w in (kernels[name] for name in hidden))


def run(ctx: core.Context) -> core.Outcome:
  s = ctx.settings
  names = list(STARTS)
  base = engine.config({"model.hidden_sizes": (64, 64), "train.num_epochs": s.epochs})
  runs = engine.sweep(base, list(STARTS.values()), s.seeds)
  final = engine.kernels(engine.to_numpy(runs.result.state.params))   # (K, in, out) each
  spreads = runs.split([spread({n: w[k] for n, w in final.items()})
                        for k in range(s.seeds * len(names))])
  best = runs.best_val(unfinished=np.nan)
  val = runs.curves("val_accuracy", s.epochs)
  conditions = [core.condition(f"unit spread after training, {kind}", spreads[:, j], "<", 1e-4)
                for j, kind in enumerate(names[:2])]
  conditions += [core.condition(f"best validation accuracy, {kind}", best[:, j], "<", 0.5,
                                hint="a symmetric net is a net of width 1: it can still "
                                "separate a few classes")
                 for j, kind in enumerate(names[:2])]
  conditions.append(core.condition("best validation accuracy, He (control)", best[:, 2], ">",
                                   0.9))
  fig, axes = figures.figure(2, 2, size=(5.4, 3.8))
  colors = ("tab:red", "tab:orange", "tab:blue")
  figures.bands(axes[0, 0], np.arange(1, s.epochs + 1), val, names, colors, marker="o")
  axes[0, 0].set(xlabel="epoch", ylabel="validation accuracy", ylim=(0, 1),
                 title="digits MLP 64-64-64-10, Adam")
  axes[0, 0].legend(fontsize=8)
  ax = axes[0, 1]
  for j in range(len(names)):
    ax.scatter(np.full(s.seeds, j), np.maximum(spreads[:, j], 1e-12), color=colors[j], s=40)
  ax.axhline(1e-4, color="k", linestyle="--", linewidth=1, label="identical below (1e-4)")
  ax.set(xticks=range(len(names)), xticklabels=names, yscale="log", ylim=(1e-13, 1e2),
         ylabel="spread of the units' incoming weights", title="after training (0 shown at 1e-12)")
  ax.legend(fontsize=8)
  for ax, kind in zip(axes[1], ("constant", "he")):
    image = final["Dense_0"][names.index(kind)]   # seed 0's member of that start
    ax.imshow(image, aspect="auto", cmap="RdBu_r", vmin=-np.abs(image).max(),
              vmax=np.abs(image).max())
    ax.set(xlabel="hidden unit", ylabel="input pixel",
           title=f"first-layer weights after training, {kind} start")
  measured = (f"unit spread {core.stats(zip(names, spreads.T))}; best val accuracy "
              f"{core.stats(zip(names, best.T))}")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"starts": names, "spread": spreads.tolist(), "best_val": best.tolist()})


CLAIM = core.Claim(12, "zero_init", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
