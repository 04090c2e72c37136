"""Claim 19 (``nesterov``): the look-ahead and rewritten forms of Nesterov momentum follow the same
trajectory, and Nesterov converges faster than plain momentum on a convex problem."""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Nesterov: two forms, one trajectory; faster than momentum"
SECTION = "Part 3, Parameter updates (Nesterov momentum)"
STATEMENT = ("Nesterov momentum evaluates the gradient at the look-ahead position x + mu * v; in "
             "practice it is rewritten (x_ahead = x + mu * v) so the update looks like SGD with "
             "momentum. It enjoys stronger theoretical convergence guarantees for convex "
             "functions and in practice works slightly better than standard momentum.")
EXPERIMENT = ("research.train.train_members on a convex problem: softmax regression on digits "
              "(hidden_sizes=(), Xavier, l2 1e-3, as configs/second_order_softmax.py), full "
              "batch (every epoch one update), lr 0.5 and mu 0.9 for every rule: 'momentum', "
              "'nesterov' (the rewritten form, which stores x_ahead) and 'nesterov_lookahead' "
              "(gradient at x + mu v, stores x); one program per rule, one member per seed, "
              "parameters recorded after every update (on_snapshot). Same trajectory: the "
              "rewritten form's x_ahead_t against the look-ahead form's x_t + mu (x_t - x_t-1) "
              "(its velocity is x_t - x_t-1).")
RULE = ("Per seed: max over updates of ||x_ahead_t - (x_t + mu (x_t - x_t-1))|| / ||x_ahead_t|| "
        "< 1e-4 (identical up to float32 rounding); mean training loss over the updates, "
        "momentum - Nesterov > 0 (Nesterov converges faster).")
SETTINGS = {"tiny": {"seeds": 1, "steps": 10}, "short": {"seeds": 3, "steps": 100},
            "full": {"seeds": 5, "steps": 300}}
FORMS = ("momentum", "nesterov", "nesterov_lookahead")
LR, MU = 0.5, 0.9


def flat(variables) -> np.ndarray:
  """``(K, P)``: every member's parameters as one vector."""
  import jax
  leaves = jax.tree.leaves(variables["params"])
  return np.concatenate([np.asarray(leaf, np.float64).reshape(leaf.shape[0], -1)
                         for leaf in leaves], axis=1)


def run(ctx: core.Context) -> core.Outcome:
  s = ctx.settings
  n_train = len(engine.dataset(engine.config()).x_train)
  base = engine.config({"model.hidden_sizes": (), "model.init": "xavier",
                        "model.output_scale": 1.0, "loss.l2": 1e-3, "train.batch_size": n_train,
                        "train.num_epochs": s.steps, "optimizer.learning_rate": LR,
                        "optimizer.mu": MU})
  losses, params = {}, {}
  for form in FORMS:
    snapshots: list = []
    runs = engine.sweep(base, [{"optimizer.name": form}], s.seeds,
                        on_snapshot=lambda e, v, i, out=snapshots: out.append(flat(v)))
    losses[form] = runs.curves("train_loss", s.steps)[:, 0]
    params[form] = np.stack(snapshots, axis=1)            # (K, steps, P)
  ahead = params["nesterov"][:, 1:]
  x = params["nesterov_lookahead"]
  shifted = x[:, 1:] + MU * (x[:, 1:] - x[:, :-1])
  gap = np.max(np.linalg.norm(ahead - shifted, axis=2) / np.linalg.norm(ahead, axis=2), axis=1)
  area = {form: np.nanmean(losses[form], axis=1) for form in FORMS}
  loss_gap = np.nanmax(np.abs(losses["nesterov"] - losses["nesterov_lookahead"])
                       / np.abs(losses["nesterov"]), axis=1)
  conditions = [
      core.condition("max relative distance, rewritten vs shifted look-ahead form", gap, "<",
                     1e-4),
      core.condition("mean training loss over the updates, momentum - Nesterov",
                     area["momentum"] - area["nesterov"], ">", 0.0),
  ]
  fig, axes = figures.figure(2, size=(5.4, 4.4))
  steps = np.arange(1, s.steps + 1)
  colors = dict(zip(FORMS, ("tab:orange", "tab:blue", "tab:cyan")))
  for form in FORMS:
    figures.seed_band(axes[0, 0], steps, losses[form], color=colors[form], label=form,
                      linestyle="--" if form == "nesterov_lookahead" else "-")
  axes[0, 0].set(yscale="log", xlabel="update (full batch)", ylabel="training loss (+ L2)",
                 title=f"softmax regression on digits, lr {LR}, mu {MU}")
  axes[0, 0].legend(fontsize=8)
  rel = np.linalg.norm(ahead - shifted, axis=2) / np.linalg.norm(ahead, axis=2)
  figures.seed_band(axes[0, 1], steps[1:], np.maximum(rel, 1e-12), color="tab:blue")
  axes[0, 1].axhline(1e-4, color="k", linestyle="--", linewidth=1, label="rule: < 1e-4")
  axes[0, 1].set(yscale="log", xlabel="update", ylabel="||x_ahead - (x + mu v)|| / ||x_ahead||",
                 title="rewritten form vs look-ahead form, shifted")
  axes[0, 1].legend(fontsize=8)
  measured = (f"max relative distance between the two forms {core.stat(gap)}; mean training "
              f"loss {core.stats(area)}")
  notes = [f"largest relative difference of the reported training losses of the two Nesterov "
           f"forms (both the loss at x_ahead): {core.stat(loss_gap)}"]
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"max_relative_distance": gap.tolist(),
                       "mean_train_loss": {f: a.tolist() for f, a in area.items()}}, notes)


CLAIM = core.Claim(19, "nesterov", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
