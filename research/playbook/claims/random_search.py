"""Claim 22 (``random_search``): with one hyperparameter mattering much more than the other,
random search beats grid search at the same budget."""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Random search beats grid search"
SECTION = "Part 3, Hyperparameter optimization (prefer random search to grid search)"
STATEMENT = ("Random search is more efficient than grid search (Bergstra and Bengio): it is "
             "often the case that some hyperparameters matter much more than others, and with "
             "random search every trial tries a new value of the important one, where a grid "
             "tries the same few values again and again.")
EXPERIMENT = ("research.search.space.sample of a 2-D space, Adam's learning_rate on a log "
              "scale in [1e-5, 1e-1] (the important one) and loss.l2 on a log scale in [1e-6, "
              "1e-3] (barely matters here), 9 trials per search: method='grid' (3 x 3 cell "
              "centres, 3 distinct learning rates) against method='random' (seed = the repeat). "
              "The evaluator is the real thing, not a surrogate: every trial of every repeat is "
              "a member of ONE research.train.train_members program (digits MLP 64-64-10, batch "
              "64, `epochs` epochs; training seed = the repeat, the same for both methods). A "
              "search's result = its best trial's best validation accuracy.")
RULE = ("Over the repeats: best validation accuracy of random search - of grid search > 0.")
SETTINGS = {"tiny": {"repeats": 1, "epochs": 1}, "short": {"repeats": 2, "epochs": 5},
            "full": {"repeats": 6, "epochs": 8}}
TRIALS = 9


def space():
  from research.search.space import Space
  return Space.from_dict({
      "learning_rate": {"path": "optimizer.learning_rate", "low": 1e-5, "high": 1e-1,
                        "scale": "log"},
      "l2": {"path": "loss.l2", "low": 1e-6, "high": 1e-3, "scale": "log"}})


def search(points_by_search: list[list[dict]], base, seeds: list[int]):
  """Best validation accuracy per trial, all searches as one members program."""
  sp = space()
  overrides = [{**{sp[name].path: value for name, value in point.items()}, "seed": seed}
               for points, seed in zip(points_by_search, seeds) for point in points]
  result = engine.members(engine.variants(base, overrides))
  best = np.where(result.best_val_accuracy < 0, 0.0, result.best_val_accuracy)
  return best.reshape(len(points_by_search), -1)


def run(ctx: core.Context) -> core.Outcome:
  from research.search.space import sample
  s = ctx.settings
  sp = space()
  base = engine.config({"model.hidden_sizes": (64,), "train.num_epochs": s.epochs})
  grid = sample(sp, TRIALS, method="grid")
  randoms = [sample(sp, TRIALS, method="random", seed=r) for r in range(s.repeats)]
  searches = [grid] * s.repeats + randoms
  accuracy = search(searches, base, list(range(s.repeats)) * 2)
  grid_acc, random_acc = accuracy[:s.repeats], accuracy[s.repeats:]
  gain = random_acc.max(axis=1) - grid_acc.max(axis=1)
  conditions = [core.condition("best val accuracy: random - grid", gain, ">", 0.0,
                               hint="the grid's middle learning rate is the log range's centre, "
                               "1e-3, which is Adam's best on digits: this grid sits on the "
                               "optimum by construction of the range")]
  fig, axes = figures.figure(2, size=(5.2, 4.4))
  ax = axes[0, 0]
  lr_grid = [p["learning_rate"] for p in grid]
  for r in range(s.repeats):
    ax.scatter(lr_grid, grid_acc[r], color="tab:red", marker="s", s=30, alpha=0.5,
               label="grid" if r == 0 else None)
    ax.scatter([p["learning_rate"] for p in randoms[r]], random_acc[r], color="tab:blue", s=20,
               alpha=0.6, label="random" if r == 0 else None)
  ax.set(xscale="log", xlabel="learning rate (the important one)",
         ylabel="best validation accuracy of the trial", ylim=(0, 1),
         title="every trial of every repeat")
  ax.legend(fontsize=8, loc="lower left")
  ax = axes[0, 1]
  ax.plot(np.arange(s.repeats), grid_acc.max(axis=1), "s-", color="tab:red", label="grid")
  ax.plot(np.arange(s.repeats), random_acc.max(axis=1), "o-", color="tab:blue", label="random")
  ax.set(xlabel="repeat", ylabel="best validation accuracy of the search",
         title=f"{TRIALS} trials each", xticks=range(s.repeats))
  ax.legend(fontsize=8)
  distinct = len({round(v, 12) for v in lr_grid})
  measured = (f"best val accuracy grid {core.stat(grid_acc.max(axis=1))}, random "
              f"{core.stat(random_acc.max(axis=1))}; random - grid {core.stat(gain)} (distinct "
              f"learning rates per search: grid {distinct}, random {TRIALS})")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"grid": grid, "random": randoms, "grid_accuracy": grid_acc.tolist(),
                       "random_accuracy": random_acc.tolist()})


CLAIM = core.Claim(22, "random_search", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS,
                   run)
