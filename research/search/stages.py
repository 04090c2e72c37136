"""Coarse to fine: stages run one after another, each on ranges narrowed around the last one's best.

A stage is ``(num_epochs, num_trials)``: e.g. wide ranges for 1 epoch, then narrower ranges for 5
epochs, then a narrow range for many. Stage ``s + 1``'s range of each hyperparameter is derived from
stage ``s``'s ``top_k`` best finished trials, on the parameter's own scale (unit coordinates ``u``,
see ``space.py``)::

    lo = max(0, min_i u_i - pad),   hi = min(1, max_i u_i + pad)     (i over the top_k trials)

and mapped back with ``from_unit``. ``pad`` is a fraction of the CURRENT range on its scale, so the
range shrinks geometrically from stage to stage but always keeps a margin around the best trials.
The new range stays inside the old one; when the best trials crowd an edge, ``border.py`` warns
that the configured range should be widened instead.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np

from research.search.space import Param, Space


class Stage(NamedTuple):
  """One stage of a coarse-to-fine search (``index`` from 0)."""
  index: int
  num_epochs: int
  num_trials: int


def stages_from_config(search_cfg) -> list[Stage]:
  """``config.search.stage_epochs`` / ``stage_trials`` (equal-length tuples) -> stages.

  Raises:
    ValueError: lengths differ, a tuple is empty, or an entry is < 1.
  """
  epochs = tuple(int(e) for e in search_cfg.stage_epochs)
  trials = tuple(int(t) for t in search_cfg.stage_trials)
  if not epochs or len(epochs) != len(trials):
    raise ValueError(f"config.search.stage_epochs={epochs} and stage_trials={trials} must be "
                     "non-empty and of equal length (one entry per stage).")
  for what, values in (("stage_epochs", epochs), ("stage_trials", trials)):
    if min(values) < 1:
      raise ValueError(f"config.search.{what}={values}: every entry must be >= 1.")
  return [Stage(i, e, t) for i, (e, t) in enumerate(zip(epochs, trials))]


def top_points(points: Sequence[Mapping[str, float]], scores: Sequence[float],
               top_k: int) -> list[Mapping[str, float]]:
  """The ``top_k`` points with the highest scores (ties: earlier first)."""
  if len(points) != len(scores):
    raise ValueError(f"{len(points)} points but {len(scores)} scores.")
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")[:int(top_k)]
  return [points[i] for i in order]


def narrow_param(param: Param, unit_values: np.ndarray, pad: float) -> Param:
  """``param`` on ``[min(u) - pad, max(u) + pad]`` (clipped to its current range, on its scale)."""
  lo = max(0.0, float(np.min(unit_values)) - pad)
  hi = min(1.0, float(np.max(unit_values)) + pad)
  low = param.low if lo == 0.0 else float(param.from_unit(lo))
  high = param.high if hi == 1.0 else float(param.from_unit(hi))
  return param.with_range(low, high)


def narrow(space: Space, points: Sequence[Mapping[str, float]], scores: Sequence[float], *,
           top_k: int, pad: float) -> Space:
  """The next stage's space: each range narrowed around the ``top_k`` best points (module doc).

  Args:
    space: the current stage's space.
    points: the finished trials' hyperparameters (``{name: value}``).
    scores: their validation accuracies (higher is better).
    top_k: how many of the best trials span the new ranges (>= 1).
    pad: margin on each side, as a fraction of the current range on its scale, in (0, 0.5].

  Raises:
    ValueError: no points, ``top_k < 1`` or ``pad`` outside (0, 0.5].
  """
  if not points:
    raise ValueError("cannot narrow the ranges: the stage has no finished trial.")
  if int(top_k) < 1:
    raise ValueError(f"config.search.top_k={top_k!r} must be >= 1.")
  if not 0.0 < float(pad) <= 0.5:
    raise ValueError(f"config.search.pad={pad!r} must be in (0, 0.5] (a fraction of the range).")
  best = space.to_unit(top_points(points, scores, top_k))
  return Space(tuple(narrow_param(p, best[:, j], float(pad)) for j, p in enumerate(space.params)))
