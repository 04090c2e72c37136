"""Where a run's wall time goes: named phases, summed (``summary.json['phases_s']``).

``import``/``data``/``init``/``compile``/``train``/``validate``/``checkpoint``/``figures``/
``test`` and ``other``: what ``scripts/bench/bench_startup.py`` reports and what to look at when a
short run feels slow (compilation and start-up dominate a 30-epoch digits run).
"""
from __future__ import annotations

import contextlib
import time
from typing import Iterator


class PhaseTimer:
  """Sums wall time per phase name."""

  def __init__(self) -> None:
    self.seconds: dict[str, float] = {}

  @contextlib.contextmanager
  def __call__(self, name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
      yield
    finally:
      self.add(name, time.perf_counter() - start)

  def add(self, name: str, seconds: float) -> None:
    self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)

  def rounded(self) -> dict[str, float]:
    return {name: round(value, 3) for name, value in self.seconds.items()}
