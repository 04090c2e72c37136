"""Hyperparameter checks shared by every update rule and schedule.

Each check raises ``ValueError`` naming the parameter, the offending value and the allowed range,
so a bad config fails at construction time instead of producing NaNs a hundred steps later.

Values may be Python numbers, concrete numpy/jax arrays (a population of hyperparameters: every
element is checked), or things that cannot be checked at construction time and are passed through:
schedules (callables, checked when they are built) and tracers (inside ``jit``/``vmap``).
"""
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np


def _concrete(name: str, value: Any) -> np.ndarray | None:
  """Returns the value as a float numpy array, or None when it cannot be inspected now."""
  if callable(value) or isinstance(value, jax.core.Tracer):
    return None
  try:
    return np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError) as error:
    raise ValueError(f"{name} must be a number, got {value!r}") from error


def _fail(name: str, value: Any, allowed: str) -> None:
  raise ValueError(f"{name} must be in {allowed}, got {value!r}")


def check_in_interval(name: str, value: Any, low: float, high: float,
                      low_closed: bool = True, high_closed: bool = False) -> None:
  """Checks ``low <(=) value <(=) high`` elementwise; NaN always fails."""
  array = _concrete(name, value)
  if array is None:
    return
  above = array >= low if low_closed else array > low
  below = array <= high if high_closed else array < high
  if not np.all(above & below):  # NaN compares False, so it fails here too.
    close = "]" if high_closed and np.isfinite(high) else ")"
    allowed = f"{'[' if low_closed else '('}{low:g}, {high:g}{close}"
    _fail(name, value, allowed)


def check_non_negative(name: str, value: Any) -> None:
  """``0 <= value < inf`` (e.g. a learning rate or a weight decay)."""
  check_in_interval(name, value, 0.0, np.inf, low_closed=True, high_closed=False)


def check_positive(name: str, value: Any) -> None:
  """``0 < value < inf`` (e.g. eps)."""
  check_in_interval(name, value, 0.0, np.inf, low_closed=False, high_closed=False)


def check_unit_interval(name: str, value: Any) -> None:
  """``0 <= value < 1`` (e.g. mu, beta1, beta2, decay_rate)."""
  check_in_interval(name, value, 0.0, 1.0, low_closed=True, high_closed=False)


def check_positive_fraction(name: str, value: Any) -> None:
  """``0 < value <= 1`` (e.g. a decay or plateau factor)."""
  check_in_interval(name, value, 0.0, 1.0, low_closed=False, high_closed=True)


def check_integer_at_least(name: str, value: Any, minimum: int) -> None:
  """``value`` is an integer ``>= minimum`` (e.g. patience >= 1, steps_per_epoch >= 1)."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_choice(kind: str, name: Any, known: Iterable[str]) -> None:
  """``name`` is one of ``known``; the error lists the known names."""
  known = tuple(known)
  if name not in known:
    raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(known)}")
