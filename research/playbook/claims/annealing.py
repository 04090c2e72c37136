"""Claim 20 (``annealing``): step, exponential and 1/t decay reach a lower final loss than a
constant learning rate at the same budget; reduce-on-plateau halving does as well as a tuned
step schedule."""
from __future__ import annotations

import numpy as np

from research.playbook import core, engine, figures

TITLE = "Annealing beats a constant rate; plateau ~ tuned step"
SECTION = "Part 3, Annealing the learning rate"
STATEMENT = ("With a high learning rate the system cannot settle into the deeper, narrower "
             "parts of the loss function; annealing the rate (step decay, exponential decay "
             "a0 e^-kt, 1/t decay a0 / (1 + kt)) gets there. A common heuristic: reduce the rate "
             "by a constant (e.g. 0.5) whenever the validation error stops improving.")
EXPERIMENT = ("research.train.train_members on digits (MLP 64-100-10, He, SGD momentum 0.9, "
              "batch 64, E epochs), one program per schedule with one member per seed. The base "
              "rate a0 is the constant schedule's best (lowest mean final training loss) of "
              "10^-2.5 .. 10^-0.5 in half decades; from a0: step (tuned: the best of every "
              "E/4 x 0.5, E/3 x 0.1, E/2 x 0.1), exponential (k = ln(10)/E: a0/10 at the end), "
              "inverse_time (k = 9/E: a0/10 at the end), plateau (factor 0.5, patience 3, on the "
              "validation accuracy). Measured: the final epoch's training loss.")
RULE = ("Per seed: log10(final loss constant / final loss S) > 0 for S in step, exponential, "
        "inverse_time; plateau does as well as the tuned step: log10(final loss plateau / "
        "step) < log10(1.5).")
DECAYS = ("step", "exponential", "inverse_time", "plateau")
#: tiny: one step candidate and two decays (fewer programs to compile).
SETTINGS = {"tiny": {"seeds": 1, "epochs": 3, "lrs": (-1.5,), "step_candidates": 1,
                     "decays": ("step", "plateau")},
            "short": {"seeds": 2, "epochs": 15, "lrs": (-2.5, -2.0, -1.5, -1.0, -0.5),
                      "step_candidates": 3, "decays": DECAYS},
            "full": {"seeds": 3, "epochs": 40, "lrs": (-2.5, -2.0, -1.5, -1.0, -0.5),
                     "step_candidates": 3, "decays": DECAYS}}


def schedules(epochs: int) -> dict[str, list[dict]]:
  """Each schedule's candidates (overrides of optimizer.schedule); step has three."""
  return {
      "step": [{"name": "step", "every": max(1, epochs // 4), "factor": 0.5},
               {"name": "step", "every": max(1, epochs // 3), "factor": 0.1},
               {"name": "step", "every": max(1, epochs // 2), "factor": 0.1}],
      "exponential": [{"name": "exponential", "k": float(np.log(10) / epochs)}],
      "inverse_time": [{"name": "inverse_time", "k": 9.0 / epochs}],
      "plateau": [{"name": "plateau", "factor": 0.5, "patience": 3}],
  }


def train(base, lr: float | list, seeds: int, schedule: dict | None = None):
  """``(final training loss (seeds, len(lrs)), loss curves, lr curves)`` of one program."""
  lrs = lr if isinstance(lr, list) else [lr]
  overrides = {f"optimizer.schedule.{k}": v for k, v in (schedule or {}).items()}
  runs = engine.sweep(base, [{**overrides, "optimizer.learning_rate": float(a)} for a in lrs],
                      seeds)
  epochs = int(base.train.num_epochs)
  loss = runs.curves("train_loss", epochs, fill=np.inf)
  final = np.where(np.isfinite(loss[..., -1]), loss[..., -1], np.inf)
  return final, loss, runs.curves("learning_rate", epochs)


def run(ctx: core.Context) -> core.Outcome:
  s = ctx.settings
  base = engine.config({"model.hidden_sizes": (100,), "optimizer.name": "momentum",
                        "optimizer.mu": 0.9, "train.num_epochs": s.epochs})
  lrs = list(10.0 ** np.array(s.lrs))
  final, loss, rate = train(base, lrs, s.seeds)
  with np.errstate(invalid="ignore"):
    j = int(np.argmin(np.mean(final, axis=0)))
  a0 = lrs[j]
  results = {"constant": (final[:, j], loss[:, j], rate[:, j])}
  chosen = {}
  for name, candidates in schedules(s.epochs).items():
    if name not in s.decays:
      continue
    candidates = candidates[:s.step_candidates] if name == "step" else candidates
    runs = [train(base, a0, s.seeds, c) for c in candidates]
    k = int(np.argmin([np.mean(r[0]) for r in runs]))
    chosen[name] = candidates[k]
    results[name] = tuple(r[:, 0] for r in runs[k])
  last = {name: r[0] for name, r in results.items()}
  ratio = lambda a, b: np.log10(last[a] / last[b])
  conditions = [core.condition(
      f"log10(final loss constant / {n})", ratio("constant", n), ">", 0.0,
      hint="the base rate is the constant schedule's best at this budget; if the training loss "
      "is still falling steadily there (no noise floor to settle below), a decay only slows "
      "the fit") for n in ("step", "exponential", "inverse_time") if n in last]
  conditions.append(core.condition("log10(final loss plateau / tuned step)",
                                   ratio("plateau", "step"), "<", float(np.log10(1.5)),
                                   hint="patience 3 epochs leaves few halvings in a short run"))
  fig, axes = figures.figure(2, size=(5.4, 4.4))
  epochs = np.arange(1, s.epochs + 1)
  colors = dict(zip(results, ("k", "tab:red", "tab:orange", "tab:green", "tab:blue")))
  for name, (_, curves, rates) in results.items():
    figures.seed_band(axes[0, 0], epochs, curves, color=colors[name], label=name)
    figures.seed_band(axes[0, 1], epochs, rates, color=colors[name], label=name)
  axes[0, 0].set(yscale="log", xlabel="epoch", ylabel="training loss",
                 title=f"SGD momentum on digits, a0 = {a0:.3g}")
  axes[0, 0].legend(fontsize=8)
  axes[0, 1].set(yscale="log", xlabel="epoch", ylabel="learning rate", title="the schedules")
  step = chosen["step"]
  figures.note(axes[0, 1], [f"tuned step: x{step['factor']:g} every {step['every']} epochs"],
               loc="lower left")
  measured = f"final training loss from a0 = {a0:.3g}: {core.stats(last)}"
  return core.Outcome(conditions, measured, figures.finish(fig, ctx, conditions),
                      {"a0": a0, "final_loss": {n: v.tolist() for n, v in last.items()},
                       "tuned_step": chosen["step"]})


CLAIM = core.Claim(20, "annealing", TITLE, SECTION, STATEMENT, EXPERIMENT, RULE, SETTINGS, run)
