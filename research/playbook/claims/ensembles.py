"""Claim 24 (``ensembles``): ensemble accuracy rises with K with diminishing returns; seed
ensembles beat checkpoint ensembles."""
from __future__ import annotations

import os

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Ensembles: gains diminish with K; seeds beat checkpoints"
SECTION = "Part 3, Evaluation: model ensembles"
STATEMENT = ("Train several independent models and average their predictions at test time: "
             "performance improves monotonically with the number of models, with diminishing "
             "returns. Different initializations of one model are a good ensemble; different "
             "checkpoints of a single run are a cheap one, which lacks variety.")
EXPERIMENT = ("research.ensemble.train_seeds of the default digits MLP (64-256-256-10, Adam "
              "1e-3, `epochs` epochs) with K x repeats seeds in one program, stacked snapshots "
              "every epoch (snapshot_dir). Per repeat: the seed ensemble = K seeds at their "
              "best validation epoch (seed_members 'best'); the checkpoint ensemble = the last "
              "K epochs of the repeat's first seed (members_from_snapshots). Test accuracy of "
              "the first k members for k = 1..K (member_logits, combine.cumulative_metrics, "
              "probabilities averaged), averaged over 20 random orders of the members.")
RULE = ("Per repeat: rises: accuracy(K) - accuracy(1) > 0 (seed ensemble); diminishing: "
        "[accuracy(K/2) - accuracy(1)] - [accuracy(K) - accuracy(K/2)] > 0; seeds beat "
        "checkpoints: accuracy of the K-seed ensemble - of the K-checkpoint ensemble > 0.")
SETTINGS = {"tiny": {"k": 2, "repeats": 1, "epochs": 2},
            "short": {"k": 4, "repeats": 3, "epochs": 12},
            "full": {"k": 8, "repeats": 4, "epochs": 30}}
ORDERS = 20


def curve(members, x: np.ndarray, y: np.ndarray, orders: int = ORDERS) -> np.ndarray:
  """Test accuracy of the first k members (k = 1..K), averaged over random member orders."""
  from research.ensemble import cumulative_metrics, member_logits
  logits = member_logits(members, x)
  rng = np.random.default_rng(0)
  curves = [[m["accuracy"] for m in cumulative_metrics(logits[rng.permutation(len(logits))], y)]
            for _ in range(orders)]
  return np.mean(curves, axis=0)


def run(ctx: core.Context) -> core.Outcome:
  from research import ensemble
  s = ctx.settings
  k, repeats = s.k, s.repeats
  cfg = engine.config({"train.num_epochs": s.epochs})
  snapshot_dir = os.path.join(ctx.workdir, "snapshots")
  result = ensemble.train_seeds(cfg, range(k * repeats), dataset=engine.dataset(cfg),
                                snapshot_dir=snapshot_dir)
  data = result.dataset
  seeds_members = ensemble.seed_members(result, "best")
  epochs = list(range(s.epochs - k + 1, s.epochs + 1))
  seed_curves, ckpt_curves = [], []
  for r in range(repeats):
    group = seeds_members[r * k:(r + 1) * k]
    seed_curves.append(curve(group, data.x_test, data.y_test))
    checkpoints = ensemble.members_from_snapshots(snapshot_dir, result.model, steps=epochs,
                                                  member_index=r * k)
    ckpt_curves.append(curve(checkpoints, data.x_test, data.y_test))
  seed_curves, ckpt_curves = np.array(seed_curves), np.array(ckpt_curves)
  half = max(1, k // 2) - 1
  rise = seed_curves[:, -1] - seed_curves[:, 0]
  diminishing = (seed_curves[:, half] - seed_curves[:, 0]) - (seed_curves[:, -1]
                                                               - seed_curves[:, half])
  versus = seed_curves[:, -1] - ckpt_curves[:, -1]
  conditions = [
      core.condition(f"seed ensemble: test accuracy(K={k}) - accuracy(1)", rise, ">", 0.0,
                     hint="the members err on the same hard test digits (~4%): averaging "
                     "correlated mistakes changes few answers"),
      core.condition(f"gain 1 -> {half + 1} minus gain {half + 1} -> {k}", diminishing, ">",
                     0.0, hint="on 270 test digits one example is 0.4 points: the gains are a "
                     "few examples each"),
      core.condition(f"test accuracy: {k} seeds - {k} checkpoints", versus, ">", 0.0,
                     hint="with no gain from K at all, seeds and checkpoints differ by the "
                     "single models' spread"),
  ]
  fig, axes = figures.figure(size=(7.0, 4.6))
  ax = axes[0, 0]
  ks = np.arange(1, k + 1)
  figures.seed_band(ax, ks, seed_curves, color="tab:blue", marker="o",
                    label="seed ensemble (best epoch of each seed)")
  figures.seed_band(ax, ks, ckpt_curves, color="tab:orange", marker="s",
                    label=f"checkpoint ensemble (last {k} epochs of one seed)")
  ax.set(xlabel="members K", ylabel="test accuracy (mean over member orders)", xticks=ks,
         title=f"digits MLP, {repeats} repeats (band: min..max)")
  ax.legend(fontsize=8, loc="lower right")
  measured = (f"seed ensemble K=1 {core.stat(seed_curves[:, 0])} -> K={k} "
              f"{core.stat(seed_curves[:, -1])}; checkpoint ensemble K={k} "
              f"{core.stat(ckpt_curves[:, -1])}")
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"seed_curves": seed_curves.tolist(), "checkpoint_curves":
                       ckpt_curves.tolist()})


CLAIM = core.Claim(24, "ensembles", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
