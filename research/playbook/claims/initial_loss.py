"""Claim 5 (``initial_loss``): with small weights and no regularization the initial softmax loss
is ln(C) (2.302 for 10 classes)."""
from __future__ import annotations

import math

import jax
import numpy as np

from research.playbook import core, engine, figures

TITLE = "The initial softmax loss is ln(C)"
SECTION = "Part 3, Before learning: sanity checks (look for correct loss at chance performance)"
STATEMENT = ("Make sure you are getting the loss you expect when you initialize with small "
             "parameters, with regularization off: for a softmax classifier on CIFAR-10 the "
             "initial loss should be -ln(0.1) = 2.302.")
EXPERIMENT = ("research.checks.sanity.check_initial_loss (the sanity checker's first check: "
              "mean data loss, regularization off, test mode) on the first 512 digits training "
              "examples (10 classes) at the initialization a run of each config starts from "
              "(build_experiment, init_state): the default MLP 64-256-256-10 with init 'small' "
              "(every weight ~ N(0, 0.01^2)); for comparison the default He init (output layer "
              "x 0.1), Xavier, and 'unit' (N(0, 1): not small). Per seed (initialization).")
RULE = "With the small init: |initial loss - ln(10)| < 0.01 for the seeds."
SETTINGS = {"tiny": {"seeds": 1, "hidden": (16,)}, "short": {"seeds": 3, "hidden": (256, 256)},
            "full": {"seeds": 5, "hidden": (256, 256)}}
INITS = ("small", "xavier", "he", "unit")


def initial_losses(init: str, seeds: range, hidden: tuple) -> np.ndarray:
  """The sanity checker's initial data loss of the default MLP with ``init``, per seed."""
  from research.checks.sanity import INITIAL_LOSS_EXAMPLES, check_initial_loss
  from research.train import init_state, make_loss_fn
  experiment = engine.experiment(engine.config({"model.init": init,
                                                "model.hidden_sizes": hidden}))
  loss_fn = jax.jit(make_loss_fn(experiment.model, 0.0), static_argnums=5)
  data = experiment.dataset
  out = []
  for seed in seeds:
    state = init_state(experiment, seed=seed)
    result = check_initial_loss(loss_fn, state.params, state.batch_stats,
                                data.x_train[:INITIAL_LOSS_EXAMPLES],
                                data.y_train[:INITIAL_LOSS_EXAMPLES], data.num_classes, 0.25,
                                jax.random.fold_in(state.rng, 0))
    out.append(float(result.figures["initial_loss"]))
  return np.array(out)


def run(ctx: core.Context) -> core.Outcome:
  seeds = range(ctx.settings.seeds)
  losses = {init: initial_losses(init, seeds, ctx.settings.hidden) for init in INITS}
  expected = math.log(10)
  conditions = [core.condition("|initial loss - ln 10|, small init",
                               np.abs(losses["small"] - expected), "<", 0.01)]
  fig, axes = figures.figure(size=(7.0, 4.4))
  ax = axes[0, 0]
  for i, init in enumerate(INITS):
    ax.scatter(np.full(len(seeds), i), losses[init], color="tab:blue", zorder=3)
    ax.text(i, float(np.max(losses[init])) * 1.08, core.fmt(np.mean(losses[init])),
            ha="center", fontsize=8)
  ax.axhline(expected, color="tab:green", linestyle="--", label="ln(10) = 2.303")
  ax.set(xticks=range(len(INITS)),
         xticklabels=["small\nN(0, 0.01²)", "xavier\n(output x0.1)", "he\n(output x0.1)",
                      "unit\nN(0, 1)"],
         yscale="log", ylabel="initial loss (mean cross-entropy, 512 examples)",
         title="digits MLP 64-256-256-10 at initialization")
  ax.legend(fontsize=8, loc="upper left")
  measured = f"initial loss {core.stats(losses)} (ln 10 = {expected:.4f})"
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {init: v.tolist() for init, v in losses.items()})


CLAIM = core.Claim(5, "initial_loss", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
