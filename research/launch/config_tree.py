"""Configs as flat ``{dotted.path: value}`` maps, and lists of named choices.

One flattening for everything that compares or records configs: the members trainer (which
fields may differ), resuming (which fields changed), ablations (which fields differ between
variants) and TensorBoard's hparams table.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable


def flatten_config(config: Any, prefix: str = "", tuples_as_lists: bool = False
                   ) -> dict[str, Any]:
  """``{'optimizer.learning_rate': 0.001, 'model.hidden_sizes': (256, 256), ...}`` from a nested
  ``ConfigDict`` or mapping; ``tuples_as_lists``: ``(256, 256)`` becomes ``[256, 256]`` (as JSON
  reads it back), so a config and its saved ``config.json`` flatten alike."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  out: dict[str, Any] = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if hasattr(value, "to_dict") or isinstance(value, Mapping):
      out.update(flatten_config(value, name + ".", tuples_as_lists))
    else:
      out[name] = list(value) if tuples_as_lists and isinstance(value, tuple) else value
  return out


def parse_choices(field: str, text: Any, known: Iterable[str], what: str) -> list[str]:
  """``"lbfgs,adam"`` -> ``["lbfgs", "adam"]`` for the config field ``field``.

  Raises:
    ValueError: an unknown or no name, e.g. ``config.ensemble.kinds='bagging' has unknown or no
      kinds ['bagging']; known: seeds, checkpoints, averages, topk.``
  """
  known = tuple(known)
  names = [name.strip() for name in str(text).split(",") if name.strip()]
  unknown = [name for name in names if name not in known]
  if unknown or not names:
    raise ValueError(f"config.{field}={text!r} has unknown or no {what} {unknown}; known: "
                     f"{', '.join(known)}")
  return names
