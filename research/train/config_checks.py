"""Rejects a bad config before anything runs or is written, naming the field and what is allowed.

``validate_config(config)`` checks every field a training run reads: data, model, update rule
(through ``research.optim.get_optimizer``'s own checks), loss, training loop, monitoring,
checkpoints and averaging. Numbers must be finite: ``inf`` and ``nan`` are refused everywhere.
"""
from __future__ import annotations

import math
from typing import Any

from research import optim
from research.averaging import check_averaging_config
from research.data.dataset import check_data_config
from research.models import validate_model_config


def _integer(name: str, value: Any, low: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"config.{name}={value!r} must be an integer >= {low}.")


def _number(name: str, value: Any, low: float, strict: bool = False) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ValueError(f"config.{name}={value!r} must be a finite number "
                     f"{'>' if strict else '>='} {low:g}.")
  if value < low or (strict and value == low):
    raise ValueError(f"config.{name}={value!r} must be {'>' if strict else '>='} {low:g}.")


def _boolean(name: str, value: Any) -> None:
  if not isinstance(value, bool):
    raise ValueError(f"config.{name}={value!r} must be True or False.")


def validate_config(config: Any) -> None:
  """Checks every field a training run reads (module docstring).

  Raises:
    ValueError: the first bad value, named with its allowed range or choices.
  """
  _integer("seed", config.seed, 0)
  check_data_config(config.data)
  validate_model_config(config.model)
  try:
    optim.get_optimizer(config.optimizer, 1)   # the rule's own checks, nothing is built for use
  except ValueError as e:
    raise ValueError(f"config.optimizer: {e}") from None
  _number("loss.l2", config.loss.l2, 0.0)
  _integer("train.num_epochs", config.train.num_epochs, 1)
  _integer("train.batch_size", config.train.batch_size, 1)
  _integer("train.eval_batch_size", config.train.eval_batch_size, 1)
  _number("train.divergence_factor", config.train.divergence_factor, 1.0, strict=True)
  _integer("train.steps_per_call", config.train.get("steps_per_call", 1), 1)
  _boolean("monitor.enabled", config.monitor.enabled)
  _integer("monitor.every_steps", config.monitor.every_steps, 1)
  _integer("monitor.histogram_bins", config.monitor.histogram_bins, 1)
  _integer("monitor.figures_every_epochs", config.monitor.figures_every_epochs, 0)
  _boolean("monitor.figures", config.monitor.get("figures", True))
  _boolean("checkpoint.enabled", config.checkpoint.enabled)
  _integer("checkpoint.keep_latest", config.checkpoint.keep_latest, 1)
  _integer("checkpoint.keep_best", config.checkpoint.keep_best, 0)
  check_averaging_config(config.averaging)
