"""Search spaces: each hyperparameter has a range and a SCALE, and sampling is uniform on the scale.

A hyperparameter's scale maps its range ``[low, high]`` onto the unit interval ``u in [0, 1]``:

* ``linear``:        ``u = (x - low) / (high - low)``
                     (dropout: ``uniform(0, 1)``)
* ``log``:           ``u = (log10 x - log10 low) / (log10 high - log10 low)``
                     (learning rate ``10 ** uniform(-6, 1)``, regularization strength)
* ``one_minus_log``: ``u = (log10(1 - low) - log10(1 - x)) / (log10(1 - low) - log10(1 - high))``
                     (momentum-like values near 1: 0.9, 0.99, 0.999 are equally spaced)

Every sampler draws points ``u`` in the unit cube and maps them back with :meth:`Param.from_unit`,
so "random on a log scale" is ``10 ** uniform(log10 low, log10 high)`` (Bergstra & Bengio 2012:
random search beats grid search because each trial tries a new value of every hyperparameter).
Narrowing (``stages.py``), border warnings (``border.py``) and the figures (``results.py``) all work
in the same ``u`` coordinates, so "the outer 10% of the range" means 10% on the parameter's scale.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

#: The scales a hyperparameter can be searched on.
SCALES: tuple[str, ...] = ("linear", "log", "one_minus_log")

#: The point sets a stage can draw (grid only to compare against random; halton/sobol quasi-random).
METHODS: tuple[str, ...] = ("random", "grid", "halton", "sobol")

#: The keys of one entry of ``config.search.space``.
ENTRY_KEYS: tuple[str, ...] = ("path", "low", "high", "scale")


class Param(NamedTuple):
  """One searched hyperparameter.

  Attributes:
    name: short name (table column, Optuna parameter name), e.g. ``"learning_rate"``.
    path: dotted path of the config field it sets, e.g. ``"optimizer.learning_rate"``.
    low, high: the range (inclusive), ``low < high``.
    scale: one of :data:`SCALES`.
  """
  name: str
  path: str
  low: float
  high: float
  scale: str = "linear"

  def _log_range(self) -> tuple[float, float]:
    """The range's end points in the scale's own (log) coordinate, ``u = 0`` then ``u = 1``."""
    if self.scale == "log":
      return math.log10(self.low), math.log10(self.high)
    return math.log10(1.0 - self.low), math.log10(1.0 - self.high)

  def to_unit(self, x: Any) -> np.ndarray:
    """Position(s) of value(s) ``x`` in the range on this scale: 0 at ``low``, 1 at ``high``."""
    x = np.asarray(x, np.float64)
    if self.scale == "linear":
      return (x - self.low) / (self.high - self.low)
    start, end = self._log_range()
    t = np.log10(x) if self.scale == "log" else np.log10(1.0 - x)
    return (t - start) / (end - start)

  def from_unit(self, u: Any) -> np.ndarray:
    """The value(s) at unit position(s) ``u`` (inverse of :meth:`to_unit`)."""
    u = np.asarray(u, np.float64)
    if self.scale == "linear":
      return self.low + u * (self.high - self.low)
    start, end = self._log_range()
    t = start + u * (end - start)
    return 10.0 ** t if self.scale == "log" else 1.0 - 10.0 ** t

  def with_range(self, low: float, high: float) -> "Param":
    """The same hyperparameter on a new range (validated)."""
    return make_param(self.name, self.path, low, high, self.scale)

  def describe(self) -> str:
    return f"{self.name} in [{self.low:.4g}, {self.high:.4g}] ({self.scale})"


def make_param(name: str, path: str, low: float, high: float, scale: str = "linear") -> Param:
  """A validated :class:`Param`.

  Raises:
    ValueError: unknown scale, ``low >= high``, ``low <= 0`` on the log scale, or ``high >= 1`` on
      the one-minus-log scale (the message names the parameter, the value and what is allowed).
  """
  if scale not in SCALES:
    raise ValueError(f"search space {name!r}: scale={scale!r} is unknown; "
                     f"known: {', '.join(SCALES)}.")
  for what, value in (("low", low), ("high", high)):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
      raise ValueError(f"search space {name!r}: {what}={value!r} must be a number.")
    if not math.isfinite(float(value)):
      raise ValueError(f"search space {name!r}: {what}={value!r} must be finite.")
  low, high = float(low), float(high)
  if not low < high:
    raise ValueError(f"search space {name!r}: low={low!r} must be < high={high!r}.")
  if scale == "log" and low <= 0:
    raise ValueError(f"search space {name!r}: low={low!r} must be > 0 on the log scale "
                     f"(use scale='linear' to include 0).")
  if scale == "one_minus_log" and high >= 1:
    raise ValueError(f"search space {name!r}: high={high!r} must be < 1 on the one_minus_log "
                     f"scale (1 - x is taken on a log scale).")
  if not path:
    raise ValueError(f"search space {name!r}: path is empty; give the config field it sets, "
                     f"e.g. 'optimizer.learning_rate'.")
  return Param(name, path, low, high, scale)


class Space(NamedTuple):
  """An ordered set of :class:`Param` (order = the columns of every sampled point)."""
  params: tuple[Param, ...]

  @property
  def names(self) -> list[str]:
    return [p.name for p in self.params]

  def __len__(self) -> int:
    return len(self.params)

  def __getitem__(self, name: str) -> Param:
    for param in self.params:
      if param.name == name:
        return param
    raise KeyError(f"no hyperparameter {name!r} in the space; have: {', '.join(self.names)}.")

  def from_unit(self, u: np.ndarray) -> list[dict[str, float]]:
    """Rows of unit points ``(n, d)`` -> one ``{name: value}`` dict per row."""
    u = np.atleast_2d(np.asarray(u, np.float64))
    columns = [param.from_unit(u[:, j]) for j, param in enumerate(self.params)]
    return [{p.name: float(c[i]) for p, c in zip(self.params, columns)} for i in range(len(u))]

  def to_unit(self, points: Sequence[Mapping[str, float]]) -> np.ndarray:
    """``{name: value}`` dicts -> unit points ``(n, d)``."""
    return np.array([[float(p.to_unit(point[p.name])) for p in self.params] for point in points],
                    np.float64).reshape(len(points), len(self.params))

  def to_dict(self) -> dict[str, dict[str, Any]]:
    """JSON-able form (stored with the study so remote workers and reports need no config)."""
    return {p.name: {"path": p.path, "low": p.low, "high": p.high, "scale": p.scale}
            for p in self.params}

  @classmethod
  def from_dict(cls, spec: Mapping[str, Mapping[str, Any]]) -> "Space":
    """From ``{name: {path, low, high, scale}}`` (a ConfigDict works too), sorted by name."""
    if not spec:
      raise ValueError("the search space is empty: give at least one hyperparameter "
                       "(config.search.space.<name> = {path, low, high, scale}).")
    params = []
    for name in sorted(spec):
      entry = spec[name]
      if not hasattr(entry, "keys"):
        raise ValueError(f"search space {name!r}={entry!r} must be a group "
                         "{path, low, high, scale}.")
      missing = [k for k in ("path", "low", "high") if k not in entry]
      if missing:
        raise ValueError(f"search space {name!r} lacks {', '.join(missing)}; each entry needs "
                         "path, low, high and optionally scale.")
      unknown = sorted(set(entry.keys()) - set(ENTRY_KEYS))
      if unknown:
        raise ValueError(f"search space {name!r} has unknown key {unknown[0]!r}; an entry has "
                         f"{', '.join(ENTRY_KEYS)}.")
      params.append(make_param(name, entry["path"], entry["low"], entry["high"],
                               entry.get("scale", "linear")))
    return cls(tuple(params))

  def distributions(self) -> dict[str, Any]:
    """Optuna's distribution of each parameter (``FloatDistribution``, ``log`` on the log scale;
    one-minus-log is recorded on the linear axis: Optuna has no such scale)."""
    from optuna.distributions import FloatDistribution
    return {p.name: FloatDistribution(p.low, p.high, log=p.scale == "log") for p in self.params}

  def describe(self) -> str:
    return "; ".join(p.describe() for p in self.params)


def unit_points(method: str, n: int, d: int, seed: int) -> np.ndarray:
  """``n`` points in ``[0, 1)^d`` drawn by ``method`` (see :data:`METHODS`).

  * ``random``: i.i.d. uniform (``numpy.random.default_rng(seed)``).
  * ``grid``: ``m = floor(n ** (1/d))`` cell centres ``(i + 0.5) / m`` per axis, all ``m ** d``
    combinations (so possibly fewer than ``n`` points; never on the border of the range).
  * ``halton`` / ``sobol``: scrambled low-discrepancy sequences (``scipy.stats.qmc``).

  Raises:
    ValueError: unknown method or ``n < 1``.
  """
  if method not in METHODS:
    raise ValueError(f"sampling method {method!r} is unknown; known: {', '.join(METHODS)}.")
  if int(n) < 1:
    raise ValueError(f"number of trials n={n!r} must be >= 1.")
  n, d = int(n), int(d)
  if method == "random":
    return np.random.default_rng(seed).uniform(size=(n, d))
  if method == "grid":
    m = max(1, int(math.floor(n ** (1.0 / d) + 1e-9)))
    axis = (np.arange(m) + 0.5) / m
    mesh = np.meshgrid(*([axis] * d), indexing="ij")
    return np.stack([g.ravel() for g in mesh], axis=1)
  from scipy.stats import qmc
  engine = qmc.Halton(d, seed=seed) if method == "halton" else qmc.Sobol(d, seed=seed)
  if method == "sobol":
    # Sobol is balanced for powers of two; drawing exactly n (any n) is still valid, only warned.
    import warnings
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", UserWarning)
      return engine.random(n)
  return engine.random(n)


def sample(space: Space, n: int, *, method: str = "random", seed: int = 0
           ) -> list[dict[str, float]]:
  """``n`` hyperparameter settings from ``space`` (uniform on each parameter's scale)."""
  return space.from_unit(unit_points(method, n, len(space), seed))
