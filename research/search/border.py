"""Best value on the border: warn when the best trials sit near an edge of a hyperparameter's range.

If the best value of a hyperparameter lies in the outer ``fraction`` (default 10%) of its
configured range, measured on the parameter's own scale (``u < fraction`` or
``u > 1 - fraction``, see ``space.py``), the optimum may lie outside the range: the search should
be re-run with the range widened in that direction (the suggested bound is always outside the
configured range). The rule looks at the best trial and reports how many of the ``top_k``
best share that edge.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np

from research.search.space import Space
from research.search.stages import top_points


class BorderWarning(NamedTuple):
  """The best trials' value of ``name`` lies near the ``side`` ('low' or 'high') edge."""
  name: str
  side: str
  value: float
  low: float
  high: float
  scale: str
  fraction: float
  count: int          # how many of the top_k best trials share this edge band
  top_k: int
  suggestion: float | None  # a widened bound (log scales), None on the linear scale

  @property
  def message(self) -> str:
    band = "lowest" if self.side == "low" else "highest"
    direction = "downward (lower `low`" if self.side == "low" else "upward (raise `high`"
    hint = f", e.g. to {self.suggestion:.3g})" if self.suggestion is not None else ")"
    return (f"{self.name}: the best trial's value {self.value:.4g} lies in the {band} "
            f"{self.fraction:.0%} of [{self.low:.4g}, {self.high:.4g}] on its {self.scale} scale "
            f"({self.count} of the top {self.top_k}); widen the range {direction}{hint}.")


def border_warnings(space: Space, points: Sequence[Mapping[str, float]], scores: Sequence[float],
                    *, fraction: float = 0.1, top_k: int = 3) -> list[BorderWarning]:
  """One :class:`BorderWarning` per hyperparameter whose best value is within ``fraction`` of an
  edge.

  Args:
    space: the CONFIGURED ranges (``config.search.space``), also for the trials of a narrowed
      stage: the advice is about the range the user sets, so it never suggests a bound inside it
      (a narrowed stage's edge is no reason to widen anything).
    points: the finished trials' hyperparameters; scores: their validation accuracies.
    fraction: width of the edge band on the parameter's scale, in (0, 0.5).
    top_k: how many best trials to count in the band (the report's "k of the top n").

  Raises:
    ValueError: ``fraction`` outside (0, 0.5).
  """
  if not 0.0 < float(fraction) < 0.5:
    raise ValueError(f"border fraction={fraction!r} must be in (0, 0.5).")
  if not points:
    return []
  top = top_points(points, scores, max(1, int(top_k)))
  best = space.to_unit(top)
  warnings = []
  for j, param in enumerate(space.params):
    for side, in_band in (("low", best[:, j] < fraction), ("high", best[:, j] > 1.0 - fraction)):
      if not in_band[0]:
        continue
      # half the current width further out on the scale, when that is still a valid value
      # (always on the log scale and upward on one-minus-log; never assumed on the linear one)
      suggestion = float(param.from_unit(-0.5 if side == "low" else 1.5))
      widens = suggestion < param.low if side == "low" else suggestion > param.high
      if param.scale == "linear" or (param.scale == "one_minus_log" and suggestion < 0) or not (
          widens):
        suggestion = None
      warnings.append(BorderWarning(
          name=param.name, side=side, value=float(top[0][param.name]), low=param.low,
          high=param.high, scale=param.scale, fraction=float(fraction),
          count=int(np.sum(in_band)), top_k=len(best), suggestion=suggestion))
  return warnings
