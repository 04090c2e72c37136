"""First- vs second-order rules, FULL BATCH: training loss against wall time and evaluations.

``compare_rules(config, workdir)`` minimizes the same full-batch training loss with every method
of ``config.second_order.methods``, from the same initialization: the model of ``config.model``
(``build_experiment``; ``hidden_sizes=()`` is softmax regression) and the training loss
(``make_loss_fn``: mean cross-entropy over the whole training split + ``0.5 * config.loss.l2 *
sum(w**2)`` over the weights), evaluated deterministically (test mode: no dropout draw, so a line
search sees one function). One ``research.train.make_step(full_batch=True)`` per update, jitted
and compiled BEFORE the clock starts. Methods: ``nesterov`` (SGD + Nesterov momentum), ``adam``,
``lbfgs``, ``hessian_free`` (Hessian-free Newton), ``newton`` (dense; small models only). Each runs
for ``max_steps`` updates or ``time_budget_s`` seconds of update time.

Evaluations are counted in gradient-equivalent passes: a loss + gradient evaluation = 1, a
loss-only evaluation = 1 (an upper bound: it costs about a third of one), a Hessian-vector
product = 2 (forward-over-reverse is about two gradients); the dense Hessian of n parameters is n
products. The point ``x_k`` is charged with the work of the updates that produced it.

Outputs in ``workdir``: ``loss_vs_time.png``, ``loss_vs_evaluations.png`` (log-log; top:
training loss; bottom: loss minus the best loss any method reached; in float32 that excess bottoms
out near 1e-8, the resolution of a loss of ~0.01-0.1) and ``second_order.json`` (per method: the
traces, steps, counts, final training loss and train/validation accuracy).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from research import optim
from research.launch.config_tree import parse_choices
from research.train import distributed
from research.train.experiment import build_experiment, init_state
from research.train.losses import make_loss_fn
from research.train.update import make_step

METHODS = ("nesterov", "adam", "lbfgs", "hessian_free", "newton")

#: Gradient-equivalent cost of each kind of evaluation (module docstring).
COST = {"value_and_grad_calls": 1, "value_calls": 1, "hvp_calls": 2}

COLORS = {"nesterov": "tab:blue", "adam": "tab:orange", "lbfgs": "tab:green",
          "hessian_free": "tab:red", "newton": "tab:purple"}


def parse_methods(text: str) -> list[str]:
  """``"lbfgs,adam"`` -> ``["lbfgs", "adam"]``; unknown names raise ``ValueError``."""
  return parse_choices("second_order.methods", text, METHODS, "methods")


def build_rule(name: str, cfg: Any) -> Any:
  """The update rule ``name`` with its settings ``config.second_order.<name>``."""
  if name == "nesterov":
    return optim.nesterov(cfg.learning_rate, mu=cfg.mu)
  if name == "adam":
    return optim.adam(cfg.learning_rate)
  if name == "lbfgs":
    return optim.lbfgs(memory_size=cfg.memory_size)
  if name == "hessian_free":
    return optim.hessian_free_newton(damping=cfg.damping, cg_max_iters=cfg.cg_max_iters,
                                     cg_tol=cfg.cg_tol)
  return optim.newton(damping=cfg.damping)


def run_method(name: str, cfg: Any, budget_s: float, loss_fn: Callable, params: Any,
               x: jax.Array, y: jax.Array) -> dict[str, Any]:
  """Runs one rule full-batch; returns its trace (time, evaluations, loss per point)."""
  tx = build_rule(name, cfg)
  state = tx.init(params)
  step = jax.jit(make_step(tx, loss_fn, full_batch=True)).lower(params, state, x, y).compile()
  counts = {kind: 0 for kind in COST}
  seen = {kind: 0 for kind in COST}
  times, evaluations, losses = [0.0], [0.0], []
  elapsed = 0.0
  for _ in range(int(cfg.max_steps)):
    start = time.perf_counter()
    params, state, value, evaluated = step(params, state, x, y)
    jax.block_until_ready((params, state))
    elapsed += time.perf_counter() - start
    losses.append(float(value))  # loss at the point BEFORE this update
    inner = optim.evaluation_count(state)
    counts["value_and_grad_calls"] += int(evaluated)
    if inner is not None:
      for kind, total in inner._asdict().items():
        counts[kind] += int(total) - seen[kind]
        seen[kind] = int(total)
    times.append(elapsed)
    evaluations.append(float(sum(COST[k] * v for k, v in counts.items())))
    if elapsed > budget_s or not np.isfinite(losses[-1]):
      break
  losses.append(float(loss_fn(params, x, y)))  # the final point (not timed)
  return {"params": params, "time_s": times, "evaluations": evaluations, "loss": losses,
          "steps": len(times) - 1, "counts": counts}


def _plot(results: dict[str, dict[str, Any]], axis: str, label: str, title: str,
          path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  best = min(min(r["loss"]) for r in results.values())
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
  for name, r in results.items():
    # Log x-axis (methods differ by orders of magnitude in speed): the common starting point
    # x = 0 is left out of the figure (it is in the JSON).
    xs, loss = np.asarray(r[axis])[1:], np.asarray(r["loss"])[1:]
    top.plot(xs, loss, label=name, color=COLORS[name], marker="." if len(xs) < 60 else None)
    excess = loss - best
    keep = excess > 0
    bottom.plot(xs[keep], excess[keep], color=COLORS[name], marker="." if len(xs) < 60 else None)
  top.set_yscale("log")
  top.set_ylabel("training loss (full batch)")
  top.set_title(title)
  top.legend()
  bottom.set_yscale("log")
  bottom.set_ylabel(f"loss - best ({best:.4g})")
  bottom.set_xlabel(label)
  for ax in (top, bottom):
    ax.set_xscale("log")
    ax.grid(True, which="major", alpha=0.3)
  fig.subplots_adjust(left=0.13, right=0.97, top=0.94, bottom=0.08, hspace=0.08)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def validate_second_order_config(config: Any) -> list[str]:
  """The methods of ``config.second_order`` (each with its settings), or ValueError."""
  methods = parse_methods(config.second_order.methods)
  for name in methods:
    if name not in config.second_order or "max_steps" not in config.second_order[name]:
      raise ValueError(f"config.second_order.{name} (with max_steps) is missing for method "
                       f"{name!r}")
    build_rule(name, config.second_order[name])  # the rule's own checks
  budget = config.second_order.time_budget_s
  if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
    raise ValueError(f"config.second_order.time_budget_s={budget!r} must be > 0 seconds.")
  return methods


def compare_rules(config: Any, workdir: str, log: Callable[[str], None] | None = print
                  ) -> dict[str, Any]:
  """Runs every method of ``config.second_order`` and writes the figures and JSON."""
  log = log or (lambda _: None)
  methods = validate_second_order_config(config)
  if config.second_order.float64:
    jax.config.update("jax_enable_x64", True)
  dtype = jnp.float64 if config.second_order.float64 else jnp.float32
  experiment = build_experiment(config)
  data = experiment.dataset
  x_train, x_val = jnp.asarray(data.x_train, dtype), jnp.asarray(data.x_val, dtype)
  y_train, y_val = jnp.asarray(data.y_train), jnp.asarray(data.y_val)
  start = init_state(experiment)
  params0 = jax.tree.map(lambda a: a.astype(dtype), start.params)
  training_loss = make_loss_fn(experiment.model, float(config.loss.l2))
  no_key = jax.random.PRNGKey(0)   # test mode: no dropout draw, the key is unused

  def loss_fn(params, x, y):
    return training_loss(params, start.batch_stats, x, y, no_key, False)[0]

  def accuracy(params, x, y):
    _, aux = training_loss(params, start.batch_stats, x, y, no_key, False)
    return float(jnp.mean(jnp.argmax(aux["logits"], -1) == y))

  num_params = sum(a.size for a in jax.tree.leaves(params0))
  hidden = tuple(config.model.hidden_sizes)
  sizes = [int(np.prod(data.input_shape)), *hidden, data.num_classes]
  problem = "softmax regression" if not hidden else (
      f"MLP {'-'.join(map(str, sizes))} ({config.model.activation})")
  log(f"{problem}: {num_params} parameters, {len(x_train)} training examples, full batch, "
      f"{jnp.dtype(dtype).name}")
  results = {}
  for name in methods:
    r = run_method(name, config.second_order[name], float(config.second_order.time_budget_s),
                   loss_fn, params0, x_train, y_train)
    params = r.pop("params")
    r["train_accuracy"] = accuracy(params, x_train, y_train)
    r["val_accuracy"] = accuracy(params, x_val, y_val)
    r["final_loss"] = r["loss"][-1]
    r["settings"] = dict(config.second_order[name])
    results[name] = r
    log(f"  {name:13s} steps {r['steps']:4d}  time {r['time_s'][-1]:6.2f} s  evaluations "
        f"{r['evaluations'][-1]:7.0f}  final loss {r['final_loss']:.6f}  train acc "
        f"{r['train_accuracy']:.4f}  val acc {r['val_accuracy']:.4f}")
  report = {"problem": problem, "num_params": int(num_params), "num_train": int(len(x_train)),
            "dtype": jnp.dtype(dtype).name, "l2": float(config.loss.l2), "cost_weights": COST,
            "time_budget_s": float(config.second_order.time_budget_s), "methods": results}
  # Several processes: each ran every method on its own devices (a time budget ends each
  # method, so their step counts may differ; nothing crosses processes); process 0's results
  # are the report, written by it alone.
  title = f"{data.name}, {problem}, full batch ({len(x_train)} examples)"
  distributed.decide(_write_report, workdir, report, title)
  return report


def _write_report(workdir: str, report: dict[str, Any], title: str) -> None:
  """``loss_vs_time.png``, ``loss_vs_evaluations.png`` and ``second_order.json``."""
  results = report["methods"]
  os.makedirs(workdir, exist_ok=True)
  _plot(results, "time_s", "wall time of the updates (s, compilation excluded)", title,
        os.path.join(workdir, "loss_vs_time.png"))
  _plot(results, "evaluations", "gradient-equivalent evaluations (f+g = 1, f = 1, Hv = 2)",
        title, os.path.join(workdir, "loss_vs_evaluations.png"))
  with open(os.path.join(workdir, "second_order.json"), "w") as f:
    json.dump(report, f, indent=1)
