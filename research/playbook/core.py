"""A claim, the verdict rule, and what a claim's experiment hands back.

A :class:`Claim` is the seed's statement (quoted or paraphrased, with its section), the experiment
that puts it to the test, and the rule that decides it, all written in the claim's module BEFORE
any number was seen. Its experiment (``claim.run(context)``) returns an :class:`Outcome`: the
:class:`Condition` s the rule checks (each with its numbers, one per seed or repeat), a one-line
summary of what was measured, the figure and the raw numbers.

The verdict rule, the same for every claim (:func:`decide`). A condition says ``q OP t``: ``q`` one
value per seed (or repeat), ``OP`` is ``>`` or ``<``, ``t`` the threshold written in the module::

    band = mean(q) -+ 2 * sd(q) / sqrt(n)      sd with n - 1 degrees of freedom; n = 1: band = q
    REPRODUCED      the whole band lies on the claimed side of t
    NOT REPRODUCED  the whole band lies on the other side (t itself counts as the other side)
    INCONCLUSIVE    t lies inside the band: the seeds disagree, or their spread is too wide

Two standard errors are an approximate 95% band; with 2-3 seeds (the short mode) the exact
t-quantile would be wider (4.3 for n = 3), so the full mode's seeds are the ones to quote. A value
that is +-inf (a diverged run's loss) makes the band undefined: the rule is then unanimity (every
value on the claimed side: REPRODUCED; every value on the other: NOT REPRODUCED; else
INCONCLUSIVE). A NaN makes the condition INCONCLUSIVE.

A claim is REPRODUCED when every condition is, NOT REPRODUCED when any condition is, and
INCONCLUSIVE otherwise. A claim whose experiment raised is reported as ``ERROR``.
"""
from __future__ import annotations

import math
import types
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

REPRODUCED = "REPRODUCED"
NOT_REPRODUCED = "NOT REPRODUCED"
INCONCLUSIVE = "INCONCLUSIVE"
ERROR = "ERROR"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)

#: Standard errors on each side of the mean in the band of :func:`decide`.
BAND_SE = 2.0
#: The run lengths: ``tiny`` (the test suite, seconds), ``short`` (the default), ``full``.
MODES = ("tiny", "short", "full")
OPS = (">", "<")


class Band(NamedTuple):
  """``mean -+ BAND_SE * se`` of a condition's values (``se = sd / sqrt(n)``, 0 for n = 1)."""
  mean: float
  sd: float
  n: int
  low: float
  high: float


def band(values: Sequence[float]) -> Band:
  """The band of :func:`decide` (NaN bounds when a value is not finite)."""
  q = np.asarray(values, np.float64).ravel()
  if q.size == 0:
    raise ValueError("a condition needs at least one value.")
  if not np.all(np.isfinite(q)):
    return Band(float(np.mean(q)), math.nan, int(q.size), math.nan, math.nan)
  sd = float(np.std(q, ddof=1)) if q.size > 1 else 0.0
  half = BAND_SE * sd / math.sqrt(q.size)
  mean = float(np.mean(q))
  return Band(mean, sd, int(q.size), mean - half, mean + half)


def decide(values: Sequence[float], op: str, threshold: float) -> str:
  """The verdict of the condition ``values OP threshold`` (module docstring).

  Raises:
    ValueError: ``op`` is not ``>`` or ``<``, or there is no value.
  """
  if op not in OPS:
    raise ValueError(f"op={op!r} is unknown; known: {', '.join(OPS)}.")
  q = np.asarray(values, np.float64).ravel()
  if q.size == 0:
    raise ValueError("a condition needs at least one value.")
  if np.any(np.isnan(q)):
    return INCONCLUSIVE
  sign = 1.0 if op == ">" else -1.0
  t = sign * float(threshold)
  if not np.all(np.isfinite(q)):  # a diverged run: unanimity
    holds = sign * q > t
    return REPRODUCED if holds.all() else NOT_REPRODUCED if not holds.any() else INCONCLUSIVE
  b = band(q)
  low, high = sorted((sign * b.low, sign * b.high))
  if low > t:
    return REPRODUCED
  if high <= t:
    return NOT_REPRODUCED
  return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
  """A claim's verdict from its conditions' (module docstring)."""
  if not verdicts:
    raise ValueError("a claim needs at least one condition.")
  if all(v == REPRODUCED for v in verdicts):
    return REPRODUCED
  if any(v == NOT_REPRODUCED for v in verdicts):
    return NOT_REPRODUCED
  return INCONCLUSIVE


def fmt(x: float) -> str:
  """A number in 3 significant digits (``1.23e-05``, ``0.123``, ``123``)."""
  x = float(x)
  if not math.isfinite(x):
    return str(x)
  if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
    return f"{x:.2e}"
  return f"{x:.3g}"


def stat(values: Sequence[float]) -> str:
  """``"mean ± sd (n=3)"``, or the value alone for one value."""
  q = np.asarray(values, np.float64).ravel()
  if q.size == 1:
    return fmt(q[0])
  if not np.all(np.isfinite(q)):
    return "[" + ", ".join(fmt(v) for v in q) + "]"
  return f"{fmt(np.mean(q))} ± {fmt(np.std(q, ddof=1))} (n={q.size})"


def stats(named: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str:
  """``"he 0.98 ± 0.01 (n=3), zeros 0.1 ± 0 (n=3)"``: :func:`stat` of each named set of values
  (``zip(names, array.T)`` names the columns of a ``(seeds, variants)`` array)."""
  items = named.items() if isinstance(named, Mapping) else named
  return ", ".join(f"{name} {stat(values)}" for name, values in items)


class Condition(NamedTuple):
  """One inequality the claim's rule checks: ``values OP threshold``.

  ``text`` says it in words (``"final val accuracy, std 0.01 init"``); ``hint`` is the likely
  reason when it does not hold (written with the claim, shown in the report when it fails).
  """
  text: str
  values: tuple
  op: str
  threshold: float
  hint: str = ""

  @property
  def verdict(self) -> str:
    return decide(self.values, self.op, self.threshold)

  def describe(self) -> str:
    """``"final loss (sgd) - final loss (adam) = 0.12 ± 0.01 (n=3) > 0"``."""
    return f"{self.text} = {stat(self.values)} {self.op} {fmt(self.threshold)}"

  def to_dict(self) -> dict:
    b = band(self.values)
    return {"text": self.text, "values": [float(v) for v in self.values], "op": self.op,
            "threshold": float(self.threshold), "mean": b.mean, "sd": b.sd, "n": b.n,
            "band": [b.low, b.high], "verdict": self.verdict, "hint": self.hint}


def condition(text: str, values: Any, op: str, threshold: float, hint: str = "") -> Condition:
  """A :class:`Condition` (values flattened to floats; ``op`` checked)."""
  if op not in OPS:
    raise ValueError(f"op={op!r} is unknown; known: {', '.join(OPS)}.")
  flat = tuple(float(v) for v in np.asarray(values, np.float64).ravel())
  if not flat:
    raise ValueError(f"condition {text!r} has no value.")
  return Condition(text, flat, op, float(threshold), hint)


class Outcome(NamedTuple):
  """What a claim's experiment returns.

  ``measured``: the headline numbers in one line (mean ± sd over seeds); ``figure``: the PNG's
  path; ``numbers``: everything else worth keeping (JSON-able), written to the claim's JSON;
  ``notes``: observations outside the rule (a per-layer view, a post-hoc look), printed apart
  from the verdict and never part of it.
  """
  conditions: list
  measured: str
  figure: str
  numbers: dict
  notes: tuple = ()

  @property
  def verdict(self) -> str:
    return combine([c.verdict for c in self.conditions])


class Context(NamedTuple):
  """What a claim's ``run`` gets: the mode, its settings for that mode, where to write, and the
  claim's number and title (its figure's heading)."""
  mode: str
  settings: types.SimpleNamespace
  workdir: str          # the claim's own directory for engine runs (``<workdir>/runs/<name>``)
  figure: str           # where its figure goes (``<workdir>/figures/<name>.png``)
  log: Callable[[str], None]
  number: int
  title: str


class Claim(NamedTuple):
  """One of the playbook's claims (see the module docstring).

  ``settings`` maps each mode (:data:`MODES`) to the experiment's sizes (seeds, epochs, ...).
  """
  number: int
  name: str
  title: str
  section: str
  statement: str
  experiment: str
  rule: str
  settings: dict
  run: Callable[[Context], Outcome]

  def context(self, mode: str, workdir: str, figure: str,
              log: Callable[[str], None] = print) -> Context:
    if mode not in MODES:
      raise ValueError(f"mode={mode!r} is unknown; known: {', '.join(MODES)}.")
    return Context(mode, types.SimpleNamespace(**self.settings[mode]), workdir, figure, log,
                   self.number, self.title)


class Result(NamedTuple):
  """A claim after its run: the outcome (None when it raised), verdict, wall time, mode."""
  claim: Claim
  outcome: Outcome | None
  verdict: str
  wall_s: float
  mode: str
  error: str | None = None
