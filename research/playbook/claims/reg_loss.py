"""Claim 6 (``reg_loss``): raising the regularization strength raises the initial loss."""
from __future__ import annotations

import jax
import numpy as np

from research.playbook import core, engine, figures

TITLE = "More regularization, higher initial loss"
SECTION = "Part 3, Before learning: sanity checks"
STATEMENT = ("As a second sanity check, increasing the regularization strength should increase "
             "the loss.")
EXPERIMENT = ("research.checks.sanity.check_regularization (the sanity checker's second check) "
              "on the default digits MLP 64-256-256-10 (He init) at initialization: the total "
              "loss (data + 0.5 * l2 * sum W^2) on 512 training examples for l2 = 0, 1e-3, 1e-2, "
              "1e-1, 1, 10. Per seed (initialization).")
RULE = ("Per seed, the smallest increase of the loss between consecutive strengths is > 0 "
        "(the loss rises at every step).")
SETTINGS = {"tiny": {"seeds": 1}, "short": {"seeds": 3}, "full": {"seeds": 5}}
L2S = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def losses_for(seeds: range) -> np.ndarray:
  """``(seeds, len(L2S))``: the sanity checker's losses at each strength, per seed."""
  from research.checks.sanity import INITIAL_LOSS_EXAMPLES, check_regularization
  from research.train import init_state, make_loss_fn
  experiment = engine.experiment(engine.config())
  data = experiment.dataset
  jitted = {l2: jax.jit(make_loss_fn(experiment.model, l2), static_argnums=5) for l2 in L2S}
  out = []
  for seed in seeds:
    state = init_state(experiment, seed=seed)
    result = check_regularization(
        jitted.__getitem__, state.params, state.batch_stats,
        data.x_train[:INITIAL_LOSS_EXAMPLES], data.y_train[:INITIAL_LOSS_EXAMPLES], L2S,
        jax.random.fold_in(state.rng, 0))
    out.append(result.figures["losses"])
  return np.array(out)


def run(ctx: core.Context) -> core.Outcome:
  losses = losses_for(range(ctx.settings.seeds))
  steps = np.diff(losses, axis=1)
  conditions = [core.condition("smallest rise between consecutive l2", steps.min(axis=1), ">",
                               0.0)]
  fig, axes = figures.figure(size=(7.0, 4.4))
  ax = axes[0, 0]
  x = np.arange(len(L2S))
  for row in losses:
    ax.plot(x, row, "o-", color="tab:blue", alpha=0.6)
  ax.set(xticks=x, xticklabels=[f"{v:g}" for v in L2S], xlabel="L2 strength (loss.l2)",
         yscale="log", ylabel="initial total loss", title="digits MLP at initialization, per seed")
  figures.note(ax, [f"l2=0: {core.stat(losses[:, 0])}", f"l2=10: {core.stat(losses[:, -1])}"],
               loc="upper left")
  measured = (f"initial loss from {core.stat(losses[:, 0])} (l2=0) to "
              f"{core.stat(losses[:, -1])} (l2=10); smallest step {core.stat(steps.min(axis=1))}")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"l2": list(L2S), "losses": losses.tolist()})


CLAIM = core.Claim(6, "reg_loss", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
