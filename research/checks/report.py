"""The gradient check's numbers: relative error, verdict bands and the printed report.

Relative error (CS231n, "Gradient checks"): ``|a - n| / max(|a|, |n|)`` for analytic ``a`` and
numerical ``n``; both zero counts as a match (error 0). Bands of the worst relative error:

  > 1e-2          probably wrong
  1e-4 .. 1e-2    uncomfortable
  1e-7 .. 1e-4    acceptable only where the function has kinks (too high for smooth functions
                  such as tanh/softmax)
  <= 1e-7         good
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

PROBABLY_WRONG = "probably wrong"
UNCOMFORTABLE = "uncomfortable"
KINKS_ONLY = "acceptable (function has kinks)"
TOO_HIGH_FOR_SMOOTH = "too high for a smooth function"
GOOD = "good"
NOT_FINITE = "not finite"
INCONCLUSIVE = "inconclusive (every checked coordinate crossed a kink)"
NOT_CHECKED = "not checked"

WRONG_ABOVE = 1e-2
UNCOMFORTABLE_ABOVE = 1e-4
GOOD_AT_MOST = 1e-7


def relative_error(analytic, numerical) -> np.ndarray:
  """``|a - n| / max(|a|, |n|)`` elementwise, 0 where both are exactly 0 (NaN stays NaN)."""
  a = np.asarray(analytic, np.float64)
  n = np.asarray(numerical, np.float64)
  scale = np.maximum(np.abs(a), np.abs(n))
  with np.errstate(divide="ignore", invalid="ignore"):
    error = np.abs(a - n) / scale
  return np.where(scale == 0, 0.0, error)


def error_band(error: float, has_kinks: bool) -> str:
  """The verdict band of a (worst) relative error, see the module docstring."""
  if not np.isfinite(error):
    return NOT_FINITE
  if error > WRONG_ABOVE:
    return PROBABLY_WRONG
  if error > UNCOMFORTABLE_ABOVE:
    return UNCOMFORTABLE
  if error > GOOD_AT_MOST:
    return KINKS_ONLY if has_kinks else TOO_HIGH_FOR_SMOOTH
  return GOOD


PASSING_BANDS = (GOOD, KINKS_ONLY, NOT_CHECKED)


def _fmt(x: float) -> str:
  return f"{x:.3e}" if np.isfinite(x) else str(x)


@dataclasses.dataclass(frozen=True)
class LeafResult:
  """Per-leaf results. Arrays are per checked coordinate (flat indices into the leaf)."""
  path: str
  shape: tuple
  dtype: str
  indices: np.ndarray
  analytic: np.ndarray
  numerical: np.ndarray
  rel_error: np.ndarray
  crossed_kink: np.ndarray
  crossed_sites: tuple        # per coordinate: tuple of site descriptions that flipped
  band: str
  ok: bool
  # Per coordinate: |a - n| is within the roundoff resolution of the numerical slope
  # (~eps*|f|/h): such a coordinate agrees as well as the difference quotient can tell, and its
  # relative error (large only because |g| itself is tiny) is printed but not graded.
  within_roundoff: np.ndarray | None = None

  @property
  def num_checked(self) -> int:
    return int(self.indices.size)

  @property
  def num_kinks(self) -> int:
    return int(np.sum(self.crossed_kink))

  @property
  def num_within_roundoff(self) -> int:
    if self.within_roundoff is None:
      return 0
    return int(np.sum(self.within_roundoff & ~self.crossed_kink))

  @property
  def _clean(self) -> np.ndarray:
    """Coordinates that are graded: no kink crossed, error above the roundoff resolution."""
    clean = ~self.crossed_kink
    if self.within_roundoff is not None:
      clean = clean & ~self.within_roundoff
    return clean

  @property
  def max_rel_error(self) -> float:
    errors = self.rel_error[self._clean]
    if errors.size == 0:
      return float("nan")
    return float(np.nan if np.isnan(errors).any() else errors.max())

  @property
  def median_rel_error(self) -> float:
    errors = self.rel_error[self._clean]
    return float(np.median(errors)) if errors.size else float("nan")

  @property
  def worst(self) -> tuple[tuple, float, float] | None:
    """(index into the leaf, analytic, numerical) of the worst kink-free coordinate."""
    clean = np.flatnonzero(self._clean)
    if clean.size == 0:
      return None
    errors = np.where(np.isnan(self.rel_error[clean]), np.inf, self.rel_error[clean])
    k = clean[int(np.argmax(errors))]
    index = tuple(int(i) for i in np.unravel_index(int(self.indices[k]), self.shape))
    return index, float(self.analytic[k]), float(self.numerical[k])


@dataclasses.dataclass(frozen=True)
class DirectionalResult:
  """A check along one random unit direction ``u`` of the whole pytree (two evaluations)."""
  analytic: float    # <grad f, u>
  numerical: float   # (f(x + h u) - f(x - h u)) / 2h
  rel_error: float
  crossed_kink: bool
  crossed_sites: tuple
  band: str
  ok: bool
  within_roundoff: bool = False   # |a - n| below the quotient's resolution ~eps*|f|/h: not graded


@dataclasses.dataclass(frozen=True)
class SweepRow:
  """Errors over the same coordinates for one step size ``h`` (kink crossings excluded)."""
  h: float
  max_rel_error: float
  median_rel_error: float
  num_kinks: int
  num_checked: int


@dataclasses.dataclass(frozen=True)
class BurnIn:
  steps: int
  optimizer: str
  loss_before: float
  loss_after: float


@dataclasses.dataclass(frozen=True)
class GradCheckReport:
  """Result of ``check_gradients``; ``str(report)`` is the readable table."""
  ok: bool
  name: str
  leaves: tuple[LeafResult, ...]
  loss_value: float
  h: float
  formula: str
  precision: str
  has_kinks: bool
  kink_sites: tuple            # every parameter-dependent decision site found (DecisionSite)
  not_inspected: tuple[str, ...]
  precision_casts: tuple[str, ...]
  stop_gradients: tuple[str, ...]
  warnings: tuple[str, ...]
  directional: tuple[DirectionalResult, ...]
  sweep: tuple[SweepRow, ...] | None
  burn_in: BurnIn | None
  gradient_norm: float
  roundoff_floor: float
  loss_scale: float = 1.0
  parts: Mapping[str, "GradCheckReport"] = dataclasses.field(default_factory=dict)
  suggested_loss_scale: float | None = None   # set when the compared gradients are tiny

  @property
  def failed_leaves(self) -> tuple[str, ...]:
    return tuple(leaf.path for leaf in self.leaves if not leaf.ok)

  @property
  def num_kinks(self) -> int:
    return sum(leaf.num_kinks for leaf in self.leaves)

  @property
  def best_h(self) -> float | None:
    """The swept h with the smallest worst-case error (None without a sweep)."""
    if not self.sweep:
      return None
    finite = [row for row in self.sweep if np.isfinite(row.max_rel_error)]
    return min(finite, key=lambda row: row.max_rel_error).h if finite else None

  def __str__(self) -> str:
    return "\n".join(self._lines())

  def _lines(self) -> list[str]:
    lines = []
    title = f"Gradient check [{self.name}]" if self.name else "Gradient check"
    lines.append(f"{title}: {self.formula} differences, h={self.h:g}; {self.precision}")
    scale = f" (loss scaled by {self.loss_scale:g})" if self.loss_scale != 1.0 else ""
    checked = sum(leaf.num_checked for leaf in self.leaves)
    lines.append(f"loss = {self.loss_value:.10g}{scale}; |grad| = {self.gradient_norm:.3e}; "
                 f"{len(self.leaves)} leaves, {checked} coordinates; numerical slopes resolve "
                 f"down to ~{self.roundoff_floor:.1e} (eps*|f|/h)")
    if self.burn_in is not None:
      b = self.burn_in
      lines.append(f"burn-in: {b.steps} steps of {b.optimizer}, loss {b.loss_before:.6g} -> "
                   f"{b.loss_after:.6g}")
    kink_text = (f"{len(self.kink_sites)} parameter-dependent decision site(s)"
                 if self.has_kinks else "no kinks (smooth: errors above 1e-7 fail)")
    lines.append(f"kinks: {kink_text}; {self.num_kinks} coordinate(s) crossed one "
                 "(reported apart, not counted)")
    lines.append("")
    header = ("leaf", "shape", "checked", "kinks", "roundoff", "max rel err", "median",
              "worst index", "analytic", "numerical", "verdict")
    rows = [header]
    for leaf in self.leaves:
      worst = leaf.worst
      rows.append((leaf.path, str(tuple(leaf.shape)), str(leaf.num_checked), str(leaf.num_kinks),
                   str(leaf.num_within_roundoff),
                   _fmt(leaf.max_rel_error), _fmt(leaf.median_rel_error),
                   str(worst[0]) if worst else "-", f"{worst[1]:+.6e}" if worst else "-",
                   f"{worst[2]:+.6e}" if worst else "-",
                   leaf.band if leaf.ok else f"FAIL: {leaf.band}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
      lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for k, d in enumerate(self.directional):
      kink = " (crossed a kink: not counted)" if d.crossed_kink else ""
      kink += " (within roundoff: not graded)" if d.within_roundoff else ""
      lines.append(f"direction {k}: analytic {d.analytic:+.6e}  numerical {d.numerical:+.6e}  "
                   f"rel err {_fmt(d.rel_error)}  {d.band if d.ok else 'FAIL: ' + d.band}{kink}")
    crossings = self._crossings()
    if crossings:
      lines.append("")
      lines.append("Kink crossings (these coordinates are not counted):")
      lines.extend(f"  {line}" for line in crossings)
    if self.sweep:
      lines.append("")
      lines.append("h sweep (same coordinates; kink crossings excluded):")
      lines.append(f"  {'h':>8}  {'max rel err':>11}  {'median':>10}  kinks")
      for row in self.sweep:
        lines.append(f"  {row.h:8.0e}  {_fmt(row.max_rel_error):>11}  "
                     f"{_fmt(row.median_rel_error):>10}  {row.num_kinks}/{row.num_checked}")
      if self.best_h is not None:
        lines.append(f"  best h: {self.best_h:g}")
    notes = ([f"not inspected: {text}" for text in self.not_inspected]
             + [f"precision: {text} inside the function limits the numerical gradient"
                for text in self.precision_casts]
             # Only worth reading when something failed (softmax/logsumexp use one harmlessly).
             + [f"{text}: the analytic gradient ignores that path, the numerical one cannot "
                "(a mismatch there is by design)" for text in self.stop_gradients
                if not self.ok]
             + [f"WARNING: {text}" for text in self.warnings])
    if notes:
      lines.append("")
      lines.extend(notes)
    for part in self.parts.values():
      lines.append("")
      lines.extend(part._lines())
    lines.append("")
    if self.ok:
      lines.append(f"RESULT [{self.name}]: OK")
    else:
      failed = list(self.failed_leaves)
      failed += [f"direction {k}" for k, d in enumerate(self.directional) if not d.ok]
      failed += [f"part '{name}'" for name, part in self.parts.items() if not part.ok]
      lines.append(f"RESULT [{self.name}]: FAILED ({', '.join(failed)})")
    return lines

  def _crossings(self, limit: int = 10) -> list[str]:
    lines = []
    for leaf in self.leaves:
      for k in np.flatnonzero(leaf.crossed_kink):
        index = tuple(int(i) for i in np.unravel_index(int(leaf.indices[k]), leaf.shape))
        sites = ", ".join(leaf.crossed_sites[k][:3])
        more = len(leaf.crossed_sites[k]) - 3
        sites += f" (+{more} more)" if more > 0 else ""
        lines.append(f"{leaf.path}{list(index)}: analytic {leaf.analytic[k]:+.6e} numerical "
                     f"{leaf.numerical[k]:+.6e} rel err {_fmt(leaf.rel_error[k])} via {sites}")
    if len(lines) > limit:
      lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines
