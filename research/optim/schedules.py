"""Learning-rate and momentum schedules, and reduce-on-plateau.

A schedule is a pure function of a count ``t`` (an integer, 0 at the first update) returning the
value to use at that count; it is traced inside ``jit``, so it must use ``jnp`` operations.
``research.optim.get_optimizer`` feeds schedules the EPOCH index
``t = update_count // steps_per_epoch`` (the playbook's unit); used directly with a rule they see
the update count.

Reduce-on-plateau is different in kind: it depends on a validation metric measured on the host
between epochs, so it is a small host-side state machine whose ``scale`` the training loop applies
with ``research.optim.scale_learning_rate`` (a value in the optimizer state: no recompilation).
"""
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from research.optim import validation

Schedule = Callable[[jax.Array], jax.Array]

#: Learning-rate schedule names understood by ``get_optimizer``
#: (``config.optimizer.schedule.name``).
SCHEDULES = ("constant", "step", "exponential", "inverse_time", "plateau")


def _as_float(count: jax.Array) -> jax.Array:
  """The count in the default float dtype (float64 under x64), so schedules lose no precision."""
  return jnp.asarray(count, dtype=jnp.result_type(float))


def constant(value: float) -> Schedule:
  """``a(t) = value``."""
  validation.check_non_negative("value", value)
  return lambda count: jnp.full((), value, dtype=jnp.result_type(float))


def step_decay(init_value: float, factor: float, every: int) -> Schedule:
  """Step decay: ``a(t) = init_value * factor ** (t // every)`` (e.g. halve every 10 epochs)."""
  validation.check_non_negative("init_value", init_value)
  validation.check_positive_fraction("factor", factor)
  validation.check_integer_at_least("every", every, 1)

  def schedule(count):
    return init_value * jnp.power(factor, _as_float(count // every))

  return schedule


def exponential_decay(init_value: float, k: float) -> Schedule:
  """Exponential decay: ``a(t) = init_value * exp(-k * t)``."""
  validation.check_non_negative("init_value", init_value)
  validation.check_non_negative("k", k)
  return lambda count: init_value * jnp.exp(-k * _as_float(count))


def inverse_time_decay(init_value: float, k: float) -> Schedule:
  """1/t decay: ``a(t) = init_value / (1 + k * t)``."""
  validation.check_non_negative("init_value", init_value)
  validation.check_non_negative("k", k)
  return lambda count: init_value / (1.0 + k * _as_float(count))


def momentum_warmup(start: float = 0.5, end: float = 0.99, steps: int = 10) -> Schedule:
  """Momentum schedule: ``mu(t) = start + (end - start) * min(t, steps) / steps``.

  The playbook's advice: start momentum around 0.5 and anneal it to 0.99 over several epochs, so
  the early, large and noisy gradients are not amplified by a long velocity memory.
  """
  validation.check_unit_interval("start", start)
  validation.check_unit_interval("end", end)
  validation.check_integer_at_least("steps", steps, 1)

  def schedule(count):
    fraction = jnp.minimum(_as_float(count), steps) / steps
    return start + (end - start) * fraction

  return schedule


class PlateauState(NamedTuple):
  """Host-side state of ``ReduceOnPlateau``: plain Python numbers (checkpointable as a dict)."""
  scale: float            # multiplier of the learning rate, starts at 1.0
  best: float             # best metric seen (+inf / -inf before the first one)
  num_bad_evaluations: int  # evaluations since the last improvement (or the last reduction)
  num_reductions: int


class ReduceOnPlateau:
  """Multiply the learning rate by ``factor`` when a validation metric stops improving.

  ``mode="max"`` (accuracy): an evaluation improves when ``metric > best + min_delta``;
  ``mode="min"`` (loss): when ``metric < best - min_delta``. The threshold is an ABSOLUTE
  difference, so metrics of any sign behave the same (optax.contrib.reduce_on_plateau uses the
  relative ``best * (1 - rtol)``, which moves the threshold the wrong way for negative values).
  After ``patience`` evaluations without improvement, ``scale *= factor`` and the count restarts.

  Usage (host side, between epochs)::

      plateau = ReduceOnPlateau(factor=0.5, patience=3, min_delta=1e-4, mode="max")
      state = plateau.init()
      state = plateau.update(state, val_accuracy)
      opt_state = research.optim.scale_learning_rate(opt_state, state.scale)
  """

  MODES = ("max", "min")

  def __init__(self, factor: float = 0.5, patience: int = 3, min_delta: float = 1e-4,
               mode: str = "max", min_scale: float = 0.0):
    validation.check_positive_fraction("factor", factor)
    validation.check_integer_at_least("patience", patience, 1)
    validation.check_non_negative("min_delta", min_delta)
    validation.check_choice("plateau mode", mode, self.MODES)
    validation.check_in_interval("min_scale", min_scale, 0.0, 1.0, high_closed=True)
    self.factor = float(factor)
    self.patience = int(patience)
    self.min_delta = float(min_delta)
    self.mode = mode
    self.min_scale = float(min_scale)

  def init(self) -> PlateauState:
    """No metric seen yet, scale 1."""
    best = -math.inf if self.mode == "max" else math.inf
    return PlateauState(scale=1.0, best=best, num_bad_evaluations=0, num_reductions=0)

  def improved(self, state: PlateauState, metric: float) -> bool:
    """Whether ``metric`` beats ``state.best`` by more than ``min_delta``."""
    if self.mode == "max":
      return metric > state.best + self.min_delta
    return metric < state.best - self.min_delta

  def update(self, state: PlateauState, metric: float) -> PlateauState:
    """Feeds one evaluation of the metric; returns the new state (the input is not modified)."""
    metric = float(metric)
    if math.isnan(metric):
      raise ValueError(f"metric must be a number, got {metric!r}")
    if self.improved(state, metric):
      return state._replace(best=metric, num_bad_evaluations=0)
    num_bad = state.num_bad_evaluations + 1
    if num_bad < self.patience:
      return state._replace(num_bad_evaluations=num_bad)
    return state._replace(scale=max(state.scale * self.factor, self.min_scale),
                          num_bad_evaluations=0, num_reductions=state.num_reductions + 1)
