"""Reading series out of metrics records (metrics.jsonl lines or a TrainResult.history).

A record is a dict with an ``epoch`` and some values (see ``research.monitor.writer`` for the key
conventions). A resumed run re-writes the epochs after its last checkpoint, so every series keeps
the LAST value written for each epoch.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np


def series(records: Iterable[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
  """``(epochs, values)`` of ``key``, sorted by epoch, last write wins for a repeated epoch."""
  by_epoch: dict[float, float] = {}
  for record in records:
    if key in record and "epoch" in record:
      value = record[key]
      by_epoch[float(record["epoch"])] = float("nan") if value is None else float(value)
  epochs = np.array(sorted(by_epoch), dtype=np.float64)
  values = np.array([by_epoch[e] for e in epochs], dtype=np.float64)
  return epochs, values


def keys_with_prefix(records: Iterable[Mapping[str, Any]], prefix: str) -> list[str]:
  """The distinct keys starting with ``prefix``, in first-seen order."""
  seen: dict[str, None] = {}
  for record in records:
    for key in record:
      if key.startswith(prefix):
        seen.setdefault(key, None)
  return list(seen)


def keys_with_suffix(records: Iterable[Mapping[str, Any]], suffix: str) -> list[str]:
  """The distinct keys ending with ``suffix``, in first-seen order."""
  seen: dict[str, None] = {}
  for record in records:
    for key in record:
      if key.endswith(suffix):
        seen.setdefault(key, None)
  return list(seen)


def batch_losses_by_epoch(records: Iterable[Mapping[str, Any]]) -> list[np.ndarray]:
  """Per-batch losses grouped by epoch (batch at epoch e + (i+1)/n belongs to epoch e)."""
  epochs, losses = series(records, "batch_loss")
  if epochs.size == 0:
    return []
  # The last batch of epoch e sits exactly at e + 1; shift by a hair so it groups with epoch e.
  index = np.floor(epochs - 1e-9).astype(int)
  return [losses[index == e] for e in np.unique(index)]
