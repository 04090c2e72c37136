"""Rejects a bad config before any training starts, naming the field and what is allowed."""
from __future__ import annotations

from typing import Any

from research.data.dataset import _check as check_data_config
from research.models import validate_model_config


def _integer(name: str, value: Any, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"config.{name}={value!r} must be an integer >= {low}.")


def _number(name: str, value: Any, low: float, strict: bool = False) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"config.{name}={value!r} must be a number.")
  if value < low or (strict and value == low):
    raise ValueError(f"config.{name}={value!r} must be {'>' if strict else '>='} {low}.")


def validate_config(config: Any) -> None:
  """Checks every field the training loop reads (the optimizer is checked by ``get_optimizer``).

  Raises:
    ValueError: the first bad value, named with its allowed range or choices.
  """
  _integer("seed", config.seed, 0)
  check_data_config(config.data)
  validate_model_config(config.model)
  _number("loss.l2", config.loss.l2, 0.0)
  _integer("train.num_epochs", config.train.num_epochs, 1)
  _integer("train.batch_size", config.train.batch_size, 1)
  _integer("train.eval_batch_size", config.train.eval_batch_size, 1)
  _number("train.divergence_factor", config.train.divergence_factor, 1.0, strict=True)
  _integer("monitor.every_steps", config.monitor.every_steps, 1)
  _integer("monitor.histogram_bins", config.monitor.histogram_bins, 1)
  _integer("monitor.figures_every_epochs", config.monitor.figures_every_epochs, 0)
  _integer("checkpoint.keep_latest", config.checkpoint.keep_latest, 1)
  _integer("checkpoint.keep_best", config.checkpoint.keep_best, 0)
