"""Sanity checks before an expensive run (CS231n "Before learning: sanity checks").

``run_sanity_checks(config) -> SanityReport`` runs three checks on the model, loss and update rule
that ``config`` describes (``research.models.create_model``, ``research.train.make_loss_fn``,
``research.optim.get_optimizer``, data from ``research.data.load_dataset``):

1. ``initial_loss``: with regularization off, the initial data loss of a softmax classifier with
   small random weights is near ``ln(C)`` (each of C classes gets probability ~1/C):
   ``|loss_0 - ln(C)| <= config.sanity.chance_tolerance`` (2.302 for C = 10). Fails e.g. when
   logits are scaled up at initialization (``init='unit'``) or labels are wrong.
2. ``regularization``: the total loss at the initial parameters strictly increases along
   ``config.sanity.l2_values`` (ascending L2 strengths in the loss). Fails e.g. when the
   regularization term has the wrong sign or is not added.
3. ``overfit_subset``: with regularization off (``l2 = 0``, ``weight_decay = 0``, ``dropout = 0``),
   full-batch training on the first ``config.sanity.subset`` training examples reaches 100% training
   accuracy within ``config.sanity.overfit_steps`` updates of the configured rule. Fails e.g. with
   a learning rate of 0, a broken gradient, or a model that ignores its input. The learning-rate
   schedule is held at its first epoch (the check is about model and loss, not schedule).

Each check gives a :class:`CheckResult` (``name, passed, figures, message``); ``figures`` holds the
numbers printed by ``scripts/sanity.py``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.train.state import TrainState
from research.train.steps import make_update_step

CHECKS = ("initial_loss", "regularization", "overfit_subset")

# Examples used for the two initial-loss checks (the training split's first ones).
INITIAL_LOSS_EXAMPLES = 512
# The overfitting loop checks the accuracy every this many updates (one jitted chunk).
OVERFIT_CHUNK = 10


class CheckResult(NamedTuple):
  """One sanity check: ``figures`` are the measured numbers (floats) behind ``passed``."""
  name: str
  passed: bool
  figures: dict[str, Any]
  message: str


@dataclasses.dataclass(frozen=True)
class SanityReport:
  """The three checks, in order; ``report['initial_loss']`` gets one by name."""
  checks: tuple[CheckResult, ...]

  @property
  def passed(self) -> bool:
    return all(check.passed for check in self.checks)

  def __getitem__(self, name: str) -> CheckResult:
    for check in self.checks:
      if check.name == name:
        return check
    raise KeyError(f"no sanity check named {name!r}; known: {[c.name for c in self.checks]}")

  def format(self) -> str:
    """Human-readable report: one block per check with its figures."""
    lines = []
    for check in self.checks:
      lines.append(f"[{'PASS' if check.passed else 'FAIL'}] {check.name}: {check.message}")
      for key, value in check.figures.items():
        lines.append(f"    {key:<22} {_format_figure(value)}")
    lines.append("all sanity checks passed" if self.passed else
                 "SANITY CHECKS FAILED: " + ", ".join(c.name for c in self.checks if not c.passed))
    return "\n".join(lines)


def _format_figure(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return "[" + ", ".join(_format_figure(v) for v in value) + "]"
  if isinstance(value, (bool, np.bool_)):
    return str(bool(value))
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  if isinstance(value, (float, np.floating)):
    return f"{float(value):.6g}"
  return str(value)


def validate_sanity_config(sanity_cfg: Any) -> tuple[int, int, float, tuple[float, ...]]:
  subset = sanity_cfg.subset
  steps = sanity_cfg.overfit_steps
  tolerance = sanity_cfg.chance_tolerance
  l2_values = tuple(float(v) for v in sanity_cfg.l2_values)
  for name, value in (("config.sanity.subset", subset), ("config.sanity.overfit_steps", steps)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
  if not (isinstance(tolerance, (int, float)) and tolerance > 0):
    raise ValueError(f"config.sanity.chance_tolerance must be > 0, got {tolerance!r}")
  if (len(l2_values) < 2 or any(v < 0 or not math.isfinite(v) for v in l2_values)
      or any(b <= a for a, b in zip(l2_values, l2_values[1:]))):
    raise ValueError("config.sanity.l2_values must be at least 2 strictly increasing "
                     f"non-negative numbers, got {tuple(sanity_cfg.l2_values)!r}")
  return int(subset), int(steps), float(tolerance), l2_values


def _unregularized(config: Any) -> Any:
  """A copy of ``config`` with every regularizer off (L2 in the loss and optimizer, dropout)."""
  config = config.copy_and_resolve_references()
  config.loss.l2 = 0.0
  config.optimizer.weight_decay = 0.0
  config.model.dropout = 0.0
  return config


def check_initial_loss(loss_fn: Callable, params: Any, batch_stats: Any, x: jax.Array,
                       y: jax.Array, num_classes: int, tolerance: float,
                       rng: jax.Array) -> CheckResult:
  """Check 1: the initial data loss with regularization off is within ``tolerance`` of ln(C)."""
  loss, aux = loss_fn(params, batch_stats, x, y, rng, False)
  data_loss = float(aux["data_loss"])
  expected = math.log(num_classes)
  error = abs(data_loss - expected)
  passed = math.isfinite(data_loss) and error <= tolerance
  figures = {"initial_loss": data_loss, "expected_ln_C": expected, "abs_error": error,
             "tolerance": tolerance, "num_classes": num_classes, "examples": int(x.shape[0])}
  if passed:
    message = f"initial loss {data_loss:.4f} ~ ln({num_classes}) = {expected:.4f}"
  elif data_loss > expected:
    message = (f"initial loss {data_loss:.4f} is {error:.3f} above ln({num_classes}) = "
               f"{expected:.4f}: logits too large at init (weights' scale: use he/xavier/small "
               "init) or the loss is not a mean softmax cross-entropy")
  else:
    message = (f"initial loss {data_loss:.4f} is {error:.3f} below ln({num_classes}) = "
               f"{expected:.4f}: the untrained model is already confident and right "
               "(labels leak into inputs?) or the loss is scaled down")
  del loss
  return CheckResult("initial_loss", passed, figures, message)


def check_regularization(make_loss: Callable[[float], Callable], params: Any, batch_stats: Any,
                         x: jax.Array, y: jax.Array, l2_values: Sequence[float],
                         rng: jax.Array) -> CheckResult:
  """Check 2: the total loss at fixed parameters strictly increases with the L2 strength."""
  losses = []
  for l2 in l2_values:
    loss, _ = make_loss(l2)(params, batch_stats, x, y, rng, False)
    losses.append(float(loss))
  increasing = all(b > a for a, b in zip(losses, losses[1:]))
  passed = increasing and all(math.isfinite(v) for v in losses)
  figures = {"l2_values": list(l2_values), "losses": losses}
  pairs = ", ".join(f"l2={l2:g}: {loss:.4f}" for l2, loss in zip(l2_values, losses))
  if passed:
    message = f"loss rises with the regularization strength ({pairs})"
  else:
    message = (f"loss does not rise with the regularization strength ({pairs}): the "
               "regularization term is missing, has the wrong sign, or is not scaled by l2")
  return CheckResult("regularization", passed, figures, message)


def check_overfit_subset(loss_fn: Callable, tx: Any, params: Any, batch_stats: Any,
                         x: jax.Array, y: jax.Array, steps: int, rng: jax.Array) -> CheckResult:
  """Check 3: full-batch training on (x, y) reaches 100% training accuracy within ``steps``."""

  def accuracy_and_loss(params, batch_stats):
    _, aux = loss_fn(params, batch_stats, x, y, rng, False)
    accuracy = jnp.mean((jnp.argmax(aux["logits"], -1) == y).astype(jnp.float32))
    return accuracy, aux["data_loss"]

  # The training engine's step (research.train.apply_update): same rule, same gradient point
  # (the Nesterov look-ahead form included), same dropout keys as a training run.
  train_step = make_update_step(loss_fn, tx)

  @functools.partial(jax.jit, static_argnums=1)
  def chunk(state, length):
    state, _ = jax.lax.scan(lambda s, _: (train_step(s, x, y)[0], None), state, None,
                            length=length)
    return state, accuracy_and_loss(state.params, state.batch_stats)

  initial_accuracy, initial_loss = (float(v) for v in jax.jit(accuracy_and_loss)(params,
                                                                                 batch_stats))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                     opt_state=tx.init(params), rng=rng)
  done, accuracy, loss, steps_to_fit = 0, initial_accuracy, initial_loss, None
  while done < steps and steps_to_fit is None:
    length = min(OVERFIT_CHUNK, steps - done)
    state, (accuracy, loss) = chunk(state, length)
    done += length
    accuracy, loss = float(accuracy), float(loss)
    if accuracy >= 1.0:
      steps_to_fit = done
  passed = steps_to_fit is not None
  figures = {"examples": int(x.shape[0]), "step_budget": steps,
             # Accuracy is checked every OVERFIT_CHUNK updates, so this is a multiple of it.
             "steps_to_100_percent": steps_to_fit if passed else f"> {steps}",
             "initial_accuracy": initial_accuracy, "final_accuracy": accuracy,
             "initial_loss": initial_loss, "final_loss": loss}
  if passed:
    message = (f"reached 100% training accuracy on {x.shape[0]} examples after "
               f"{steps_to_fit} updates (loss {initial_loss:.4f} -> {loss:.4f})")
  else:
    moved = initial_loss - loss
    hint = ("the loss did not move: learning rate 0 or far too low, or gradients do not reach "
            "the parameters" if abs(moved) < 1e-3 * max(initial_loss, 1e-12) else
            "raise the learning rate or the step budget, or check the model's capacity and the "
            "gradients (scripts/gradcheck.py)")
    message = (f"only {accuracy:.0%} training accuracy on {x.shape[0]} examples after {done} "
               f"updates (loss {initial_loss:.4f} -> {loss:.4f}): {hint}")
  return CheckResult("overfit_subset", passed, figures, message)


def run_sanity_checks(config: Any, *, dataset: Any = None,
                      make_loss_fn: Callable | None = None) -> SanityReport:
  """Runs the three checks (module docstring) for ``config``; never raises on a failed check.

  Args:
    config: an experiment config (``configs/default.py`` schema); reads ``config.sanity``,
      ``config.data``, ``config.model``, ``config.optimizer``, ``config.seed``.
    dataset: an already loaded ``research.data.Dataset`` (default: ``load_dataset(config.data)``).
    make_loss_fn: ``(model, l2) -> loss_fn`` override (default ``research.train.make_loss_fn``),
      e.g. to test that a broken loss is caught.

  Raises:
    ValueError: a ``config.sanity`` value out of range (the message names it).
  """
  from research import train as train_lib

  subset, steps, tolerance, l2_values = validate_sanity_config(config.sanity)
  config = _unregularized(config)
  make_loss = make_loss_fn or train_lib.make_loss_fn
  # steps_per_epoch = the budget: schedules stay at their first epoch during the check.
  experiment = train_lib.build_experiment(config, dataset, steps_per_epoch_override=steps)
  dataset, model = experiment.dataset, experiment.model
  if subset > len(dataset.x_train):
    raise ValueError(f"config.sanity.subset={subset} exceeds the {len(dataset.x_train)} "
                     "training examples")
  # The parameters and keys a training run of this config starts from.
  start = train_lib.init_state(experiment)
  params, batch_stats = start.params, start.batch_stats
  dropout_rng = jax.random.fold_in(start.rng, 0)
  x_all = jnp.asarray(dataset.x_train[:INITIAL_LOSS_EXAMPLES], jnp.float32)
  y_all = jnp.asarray(dataset.y_train[:INITIAL_LOSS_EXAMPLES], jnp.int32)
  checks = [
      check_initial_loss(jax.jit(make_loss(model, 0.0), static_argnums=5), params, batch_stats,
                         x_all, y_all, dataset.num_classes, tolerance, dropout_rng),
      check_regularization(lambda l2: jax.jit(make_loss(model, l2), static_argnums=5), params,
                           batch_stats, x_all, y_all, l2_values, dropout_rng),
  ]
  x_sub = jnp.asarray(dataset.x_train[:subset], jnp.float32)
  y_sub = jnp.asarray(dataset.y_train[:subset], jnp.int32)
  checks.append(check_overfit_subset(make_loss(model, 0.0), experiment.tx, params, batch_stats,
                                     x_sub, y_sub, steps, start.rng))
  return SanityReport(tuple(checks))
