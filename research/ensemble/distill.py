"""Knowledge distillation: one student trained on an ensemble's soft targets (Hinton et al. 2015).

Loss per example, with student logits ``z``, the teacher's soft targets ``p_T`` at temperature T
(the ensemble's mean of ``softmax(z_k / T)``), hard label ``y`` and mixing weight ``alpha``:

    L = alpha * T**2 * KL(p_T || softmax(z / T)) + (1 - alpha) * CE(softmax(z), y).

Why ``T**2``: the soft term's gradient w.r.t. the logits is ``(softmax(z / T) - p_T) / T``; for
large T (zero-mean logits) that is ``~ (z - z_teacher) / (C T**2)``, so without the factor the soft
targets' contribution would fade as ``1/T**2`` whenever T is changed. Multiplying by ``T**2`` keeps
the relative weight of soft and hard terms independent of T. (KL rather than soft cross-entropy:
they differ by the teacher's entropy, a constant, so the gradients are identical and KL is 0 at a
perfect match.)
"""
from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

Params = Any


def check_distillation_settings(temperature: float, alpha: float) -> None:
  """Raises ValueError unless ``temperature > 0`` and ``0 <= alpha <= 1`` (finite numbers)."""
  if not temperature > 0 or temperature == float("inf"):
    raise ValueError(f"temperature={temperature!r} must be > 0.")
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha={alpha!r} must be in [0, 1].")


def distillation_loss(student_logits: jax.Array, teacher_probs: jax.Array, labels: jax.Array,
                      temperature: float, alpha: float) -> tuple[jax.Array, dict]:
  """Mean over the batch of ``alpha T^2 KL(p_T || softmax(z/T)) + (1 - alpha) CE(z, y)``.

  Args:
    student_logits: ``(B, C)``.
    teacher_probs: the teacher's probabilities at temperature T, ``(B, C)``, rows summing to 1.
    labels: integer labels ``(B,)``.
    temperature: T > 0.
    alpha: weight of the soft term in [0, 1] (0: hard labels only; 1: soft targets only).

  Returns:
    ``(loss, {'soft_loss': KL (unscaled), 'hard_loss': CE})``.
  """
  check_distillation_settings(temperature, alpha)
  log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  p = teacher_probs.astype(log_q.dtype)
  # KL(p || q) = sum p (log p - log q), with 0 log 0 = 0.
  log_p = jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
  soft = jnp.mean(jnp.sum(p * (log_p - log_q), axis=-1))
  hard = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(student_logits, labels))
  loss = alpha * temperature ** 2 * soft + (1.0 - alpha) * hard
  return loss, {"soft_loss": soft, "hard_loss": hard}


class StudentResult(NamedTuple):
  """The best-validation student and its history."""
  params: Params
  batch_stats: Params
  history: list
  best_val_accuracy: float
  best_epoch: int


def distillation_objective(temperature: float, alpha: float) -> Callable[..., jax.Array]:
  """``objective(logits, y, teacher_probs) -> loss``: :func:`distillation_loss` as the data loss
  of the training engine (``research.train.make_loss_fn(..., objective=...)``)."""
  check_distillation_settings(temperature, alpha)  # now, not inside a trace

  def objective(logits, labels, teacher_probs):
    return distillation_loss(logits, teacher_probs, labels, temperature, alpha)[0]

  return objective


def make_distill_step(model: nn.Module, tx: optax.GradientTransformation, temperature: float,
                      alpha: float, l2: float = 0.0) -> Callable:
  """``step(state, x, y, teacher_probs) -> (state, metrics)``: the training engine's step
  (``research.train.make_update_step``) with the distillation loss as the data loss."""
  from research import train
  loss_fn = train.make_loss_fn(model, l2, objective=distillation_objective(temperature, alpha))
  return train.make_update_step(loss_fn, tx)


def train_student(model: nn.Module, tx: optax.GradientTransformation, variables: dict,
                  x_train: np.ndarray, y_train: np.ndarray, teacher_probs: np.ndarray,
                  x_val: np.ndarray, y_val: np.ndarray, *, temperature: float, alpha: float,
                  num_epochs: int, batch_size: int, seed: int = 0, l2: float = 0.0,
                  eval_batch_size: int = 512,
                  log: Callable[[str], None] | None = None) -> StudentResult:
  """Trains ``model`` from ``variables`` on soft targets + hard labels; keeps the best-val epoch.

  The training engine's step (``research.train.make_update_step``, i.e. ``apply_update``: the
  Nesterov look-ahead point and every rule behave as in a training run) with the distillation
  loss as the data loss (plus ``0.5 * l2 * sum W**2``). ``teacher_probs`` are the ensemble's
  probabilities at temperature T on ``x_train`` (row i for example i). The data order of epoch e
  is ``research.train.epoch_permutation(seed, e, n)``; the last partial batch is dropped (static
  shapes, one compiled step). ``alpha = 0`` is the same recipe on hard labels only (the baseline
  a distilled student should be compared with).
  """
  from research import train
  if len(teacher_probs) != len(x_train):
    raise ValueError(f"teacher_probs has {len(teacher_probs)} rows but x_train has "
                     f"{len(x_train)} examples.")
  if num_epochs < 1:
    raise ValueError(f"num_epochs={num_epochs!r} must be >= 1.")
  if batch_size < 1 or batch_size > len(x_train):
    raise ValueError(f"batch_size={batch_size!r} must be in [1, {len(x_train)}].")
  step = jax.jit(make_distill_step(model, tx, temperature, alpha, l2), donate_argnums=0)
  eval_step = jax.jit(train.make_eval_step(model))
  # Copies: the jitted step donates its state, and the caller keeps its variables.
  params = jax.tree.map(jnp.copy, variables["params"])
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                           batch_stats=jax.tree.map(jnp.copy, variables.get("batch_stats") or {}),
                           opt_state=tx.init(params),
                           rng=jax.random.fold_in(jax.random.PRNGKey(seed), 1))
  x_train = np.asarray(x_train, np.float32)
  teacher_probs = np.asarray(teacher_probs, np.float32)
  steps = train.steps_per_epoch(len(x_train), batch_size)
  best = (-1.0, 0, None)
  history = []
  for epoch in range(num_epochs):
    start = time.perf_counter()
    order = train.epoch_permutation(seed, epoch, len(x_train))[:steps * batch_size]
    losses = []
    for idx in order.reshape(steps, batch_size):
      state, metrics = step(state, x_train[idx], y_train[idx], teacher_probs[idx])
      losses.append(metrics["loss"])
    val = train.evaluate(eval_step, state.params, state.batch_stats, x_val, y_val,
                         eval_batch_size)
    row = {"epoch": epoch + 1, "train_loss": float(np.mean(jax.device_get(losses))),
           "val_accuracy": val["accuracy"], "val_loss": val["loss"],
           "time": time.perf_counter() - start}
    history.append(row)
    if log:
      log(f"student epoch {epoch + 1}: loss {row['train_loss']:.4f} val acc "
          f"{row['val_accuracy']:.4f}")
    if row["val_accuracy"] > best[0]:
      best = (row["val_accuracy"], epoch + 1, jax.device_get((state.params, state.batch_stats)))
  return StudentResult(params=best[2][0], batch_stats=best[2][1], history=history,
                       best_val_accuracy=best[0], best_epoch=best[1])


def gain_kept(student: float, single: float, ensemble: float) -> float:
  """Fraction of the ensemble's gain over a single model that the student keeps:
  ``(student - single) / (ensemble - single)``; nan when the ensemble gains nothing or is WORSE
  than the single model (there is no gain to keep, and a ratio of two negative numbers would read
  as a positive fraction)."""
  gain = ensemble - single
  return float("nan") if gain < 1e-12 else (student - single) / gain


def _accuracy_on(model, variables, x, y, batch_size: int = 512) -> float:
  from research import train
  return train.evaluate(jax.jit(train.make_eval_step(model)), variables["params"],
                        variables.get("batch_stats") or {}, np.asarray(x, np.float32),
                        np.asarray(y), batch_size)["accuracy"]


def distill_from_members(config, members, dataset, *, log: Callable[[str], None] | None = None
                         ) -> dict:
  """Distils the ensemble ``members`` into one student of architecture ``config.model``.

  The teacher's soft targets are the members' mean ``softmax(z / T)`` on the training inputs
  (T = ``config.distill.temperature``). Two students start from the same initialization
  (seed ``config.seed + config.distill.student_seed_offset``) and see the same data order: the
  distilled one (``alpha = config.distill.alpha``) and the hard-label baseline (``alpha = 0``, the
  same recipe without the teacher). Both keep their best validation epoch.

  Returns:
    ``{'val': {...}, 'test': {...}, 'config': {...}}`` where each split holds the accuracy of
    ``single`` (the first member), ``ensemble`` (all members), ``student``, ``hard_label_student``,
    and ``gain_kept`` = (student - single) / (ensemble - single), plus ``gain_kept_vs_baseline``
    measured from the hard-label student instead of the first member.
  """
  from research import train
  from research.ensemble.combine import accuracy, ensemble_probabilities
  from research.ensemble.members import member_logits

  dcfg = config.distill
  temperature, alpha = float(dcfg.temperature), float(dcfg.alpha)
  experiment = train.build_experiment(config, dataset)
  teacher_train = ensemble_probabilities(member_logits(members, dataset.x_train), temperature)
  student_seed = int(config.seed) + int(dcfg.student_seed_offset)
  start = train.init_state(experiment, seed=student_seed)
  init = {"params": start.params, "batch_stats": start.batch_stats}
  students = {}
  for name, a in (("student", alpha), ("hard_label_student", 0.0)):
    result = train_student(experiment.model, experiment.tx, init, dataset.x_train,
                           dataset.y_train, teacher_train, dataset.x_val, dataset.y_val,
                           temperature=temperature, alpha=a, num_epochs=int(dcfg.num_epochs),
                           batch_size=experiment.batch_size, seed=student_seed,
                           l2=float(config.loss.l2),
                           eval_batch_size=int(config.train.eval_batch_size), log=log)
    students[name] = ({"params": result.params, "batch_stats": result.batch_stats}, result)
  out = {"config": {"temperature": temperature, "alpha": alpha,
                    "num_epochs": int(dcfg.num_epochs), "num_teachers": len(members),
                    "student_seed": student_seed}}
  for split in ("val", "test"):
    x, y = getattr(dataset, f"x_{split}"), np.asarray(getattr(dataset, f"y_{split}"))
    logits = member_logits(members, x)
    row = {"single": accuracy(ensemble_probabilities(logits[:1]), y),
           "ensemble": accuracy(ensemble_probabilities(logits), y)}
    for name, (variables, _) in students.items():
      row[name] = _accuracy_on(experiment.model, variables, x, y)
    row["gain_kept"] = gain_kept(row["student"], row["single"], row["ensemble"])
    row["gain_kept_vs_baseline"] = gain_kept(row["student"], row["hard_label_student"],
                                             row["ensemble"])
    out[split] = row
  out["best_epoch"] = {name: r.best_epoch for name, (_, r) in students.items()}
  return out
