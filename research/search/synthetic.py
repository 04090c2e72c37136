"""A stand-in trainer for trying a store, workers and master without training anything.

    config.search.trainer = "research.search.synthetic:train"

``train`` has the calling convention of ``research.train.train_and_evaluate`` (``config``,
``workdir``, ``on_epoch_end``) and imports no JAX: each epoch waits ``config.synthetic.epoch_s``
seconds (default 0), then reports a validation accuracy that depends only on the learning rate
and the epoch (:func:`accuracy`: best at ``10 ** -2``), and appends the epoch's row to
``metrics.jsonl``. A learning rate above 1 "diverges" (:class:`DivergenceError`, reported by the
worker as ``diverged`` like the real one). The tests of the search's processes and the store
benchmark (``scripts/bench/bench_search_stores.py``) use it, so that they measure the
bookkeeping, not training.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable

#: Learning rates above this diverge.
DIVERGES_ABOVE = 1.0


class DivergenceError(RuntimeError):
  """Named like ``research.train.DivergenceError``, so the worker reports ``diverged``."""


def accuracy(learning_rate: float, epoch: int) -> float:
  """``(1 - 0.1 |log10 lr + 2|) (1 - 0.5 ** epoch)``: best at lr = 1e-2, rising with the epoch."""
  return (1.0 - 0.1 * abs(math.log10(learning_rate) + 2.0)) * (1.0 - 0.5 ** epoch)


def train(config: Any, workdir: str, *, on_epoch_end: Callable[[int, dict], bool | None] | None
          = None, dataset: Any = None, log: Callable[[str], None] | None = None) -> list[dict]:
  """Pretends to train ``config`` for ``config.train.num_epochs`` epochs (module doc); returns
  the per-epoch records."""
  del dataset, log
  lr = float(config.optimizer.learning_rate)
  if lr > DIVERGES_ABOVE:
    raise DivergenceError(f"training diverged in epoch 1: learning rate {lr:.3g} > "
                          f"{DIVERGES_ABOVE:g}")
  epoch_s = float(config.get("synthetic", {}).get("epoch_s", 0.0))
  history = []
  for epoch in range(int(config.train.num_epochs)):
    time.sleep(epoch_s)
    record = {"epoch": epoch + 1, "val_accuracy": accuracy(lr, epoch + 1),
              "train_loss": 1.0 / (epoch + 1), "val_loss": 1.2 / (epoch + 1)}
    history.append(record)
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps(record) + "\n")
    if on_epoch_end is not None and on_epoch_end(epoch, record):
      break
  return history
