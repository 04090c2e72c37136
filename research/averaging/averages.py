"""Exponential-moving-average (EMA) and Polyak averages of the parameters.

Both are pure functions of pytrees (no hidden state), so they run inside a jitted, vmapped or
data-parallel train step and are saved in checkpoints as part of the train state.

Rules (``x_t`` is the parameter pytree passed to the t-th call of :func:`update_averages`; the
parameters given to :func:`init_averages` are only a placeholder with zero weight, returned until
the first update, so the averages are never pulled towards the initialization):

* EMA with Adam's bias correction (Kingma & Ba 2015, Sec. 3). The biased accumulator
  ``m_t = d * m_{t-1} + (1 - d) * x_t`` with ``m_0 = 0`` is divided by ``1 - d**t``; we store the
  corrected value ``e_t = m_t / (1 - d**t)`` directly, via the equivalent recurrence

      e_t = e_{t-1} + r_t * (x_t - e_{t-1}),      r_t = (1 - d) / (1 - d**t).

  ``r_1 = 1`` (the first average is the first iterate), ``r_t -> 1 - d`` as t grows, so ``e_t`` is
  the normalised weighted mean ``sum_s (1-d) d**(t-s) x_s / (1 - d**t)`` of ``x_1..x_t``.
  ``d = 0`` gives ``e_t = x_t`` exactly. (Chosen over the warm-up decay ``min(d, (1+t)/(10+t))``
  because its weights are exactly the EMA's weights renormalised, with no extra hyperparameter.)

* Polyak(-Ruppert) average (Polyak & Juditsky 1992): the uniform mean of the iterates whose step is
  ``>= polyak_start_step``, as a running mean ``p_n = p_{n-1} + (x - p_{n-1}) / n``. Before the
  start step the average simply follows the current iterate (rate 1), so an evaluation before the
  averaging window reports the raw parameters.

Cost: one extra copy of the parameters per enabled average.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Params = Any

AVERAGES = ("ema", "polyak")


class AveragesState(NamedTuple):
  """The averaged parameters and their counters (a pytree; ``None`` fields mean "off").

  Attributes:
    ema: the bias-corrected EMA of the parameters, or None when the EMA is off.
    ema_count: number of iterates in the EMA (``t``), int32 scalar.
    ema_decay: the decay ``d`` as a float scalar array (a leaf, so it can be vmapped), or None.
    polyak: the running uniform mean of the iterates since ``polyak_start_step``, or None.
    polyak_count: number of iterates in the Polyak average (``n``), int32 scalar.
    polyak_start_step: first step included in the Polyak average, int32 scalar, or None.
  """
  ema: Params | None
  ema_count: jax.Array
  ema_decay: jax.Array | None
  polyak: Params | None
  polyak_count: jax.Array
  polyak_start_step: jax.Array | None


def _copy(params: Params) -> Params:
  # A real copy: the train step donates its params buffers, so the averages must not alias them.
  return jax.tree.map(lambda x: jnp.array(x, copy=True), params)


def init_averages(params: Params, ema_decay: float | None,
                  polyak_start_step: int | None) -> AveragesState:
  """Starts the averages of ``params``.

  Args:
    params: the initial parameters (a placeholder: they get zero weight once an update happens).
    ema_decay: EMA decay ``d`` in ``[0, 1)``; None turns the EMA off. ``d = 0`` is a valid EMA
      (equal to the current iterate).
    polyak_start_step: first step (as passed to :func:`update_averages`) included in the Polyak
      average, ``>= 0``; None or a negative value turns the Polyak average off.

  Returns:
    An :class:`AveragesState`.

  Raises:
    ValueError: when ``ema_decay`` is outside ``[0, 1)``.
  """
  ema = decay = None
  if ema_decay is not None:
    if not 0.0 <= float(ema_decay) < 1.0:
      raise ValueError(f"ema_decay={ema_decay!r} is invalid: the EMA decay must be in [0, 1) "
                       "(use None, or config.averaging.ema_decay=0, to turn the EMA off).")
    ema = _copy(params)
    decay = jnp.asarray(ema_decay, dtype=jnp.result_type(float))
  polyak = start = None
  if polyak_start_step is not None and int(polyak_start_step) >= 0:
    polyak = _copy(params)
    start = jnp.asarray(int(polyak_start_step), dtype=jnp.int32)
  zero = jnp.zeros((), jnp.int32)
  return AveragesState(ema=ema, ema_count=zero, ema_decay=decay,
                       polyak=polyak, polyak_count=zero, polyak_start_step=start)


def _move_towards(average: Params, params: Params, rate_fn) -> Params:
  """``(1 - rate) * average + rate * params`` leaf by leaf; ``rate_fn(dtype)`` gives the rate in
  each leaf's own dtype (so float64 parameters get a float64 rate). This form (rather than
  ``a + r (x - a)``) is exact at ``rate = 1``: decay 0 and the start of a window copy the
  iterate."""
  def move(a, x):
    rate = rate_fn(a.dtype)
    return (1 - rate) * a + rate * x.astype(a.dtype)
  return jax.tree.map(move, average, params)


def ema_rate(decay: jax.Array, count: jax.Array, dtype=None) -> jax.Array:
  """The bias-corrected EMA rate ``r_t = (1 - d) / (1 - d**t)`` for the t-th iterate (t >= 1)."""
  dtype = dtype or jnp.result_type(float)
  d = jnp.asarray(decay).astype(dtype)
  t = jnp.asarray(count).astype(dtype)
  # 1 - d**t = -expm1(t log d) is accurate for d near 1; for d = 0 it is -expm1(-inf) = 1.
  return (1.0 - d) / -jnp.expm1(t * jnp.log(d))


def update_averages(avg_state: AveragesState, params: Params, step: jax.Array) -> AveragesState:
  """Adds the iterate ``params`` (the parameters after update number ``step``) to the averages.

  EMA: ``e <- e + r_t (x - e)`` with ``r_t = (1 - d) / (1 - d**t)``.
  Polyak: if ``step >= start``: ``n <- n + 1``, ``p <- p + (x - p) / n``; else ``p <- x``.
  """
  state = avg_state
  if state.ema is not None:
    count = state.ema_count + 1
    decay = state.ema_decay
    state = state._replace(
        ema=_move_towards(state.ema, params, lambda dtype: ema_rate(decay, count, dtype)),
        ema_count=count)
  if state.polyak is not None:
    inside = jnp.asarray(step) >= state.polyak_start_step
    count = state.polyak_count + inside.astype(jnp.int32)
    # Outside the window the rate is 1 (follow the iterate); inside it is 1/n.
    def rate_fn(dtype):
      return jnp.where(inside, 1.0 / jnp.maximum(count, 1).astype(dtype), 1.0).astype(dtype)
    state = state._replace(polyak=_move_towards(state.polyak, params, rate_fn),
                           polyak_count=count)
  return state


def averaged_params(avg_state: AveragesState | None) -> dict[str, Params]:
  """The averaged parameters by name: ``{'ema': ..., 'polyak': ...}`` (only the enabled ones).

  The EMA is already bias-corrected. Before any update each entry is the initial parameters.
  """
  if avg_state is None:
    return {}
  out = {}
  if avg_state.ema is not None:
    out["ema"] = avg_state.ema
  if avg_state.polyak is not None:
    out["polyak"] = avg_state.polyak
  return out


def check_averaging_config(averaging_cfg) -> dict[str, bool]:
  """Validates ``config.averaging``; returns ``{'ema': on, 'polyak': on}``.

  Raises:
    ValueError: ``ema_decay`` outside ``[0, 1)`` (or not a number), ``polyak_start_epoch`` not an
      integer, ``export`` unknown or naming an average that is off.
  """
  ema_decay = averaging_cfg.get("ema_decay", 0.0)
  start_epoch = averaging_cfg.get("polyak_start_epoch", -1)
  export = averaging_cfg.get("export", "raw")
  if (isinstance(ema_decay, bool) or not isinstance(ema_decay, (int, float))
      or not 0.0 <= ema_decay < 1.0):
    raise ValueError(f"config.averaging.ema_decay={ema_decay!r} is invalid: it must be in [0, 1) "
                     "(0 turns the EMA off).")
  if isinstance(start_epoch, bool) or not isinstance(start_epoch, int):
    raise ValueError(f"config.averaging.polyak_start_epoch={start_epoch!r} must be an integer "
                     "(-1 turns Polyak averaging off).")
  if export not in ("raw",) + AVERAGES:
    raise ValueError(f"config.averaging.export={export!r} is unknown; known: raw, ema, polyak.")
  enabled = {"ema": ema_decay > 0.0, "polyak": start_epoch >= 0}
  if export != "raw" and not enabled[export]:
    raise ValueError(
        f"config.averaging.export={export!r} but that average is off (ema_decay={ema_decay}, "
        f"polyak_start_epoch={start_epoch}); turn it on or export 'raw'.")
  return enabled


def init_averages_from_config(params: Params, averaging_cfg, steps_per_epoch: int
                              ) -> AveragesState | None:
  """Builds the averages from ``config.averaging`` (the schema in configs/default.py).

  ``ema_decay == 0`` means off (the config's convention); ``polyak_start_epoch < 0`` means off;
  the Polyak window starts at step ``polyak_start_epoch * steps_per_epoch`` (epoch 0 = from the
  first update). Returns None when both are off.

  Raises:
    ValueError: when ``ema_decay`` is outside ``[0, 1)`` or ``export`` names an average that is off
      or unknown.
  """
  enabled = check_averaging_config(averaging_cfg)
  ema_decay = float(averaging_cfg.get("ema_decay", 0.0))
  start_epoch = int(averaging_cfg.get("polyak_start_epoch", -1))
  if not any(enabled.values()):
    return None
  return init_averages(
      params,
      ema_decay if enabled["ema"] else None,
      start_epoch * int(steps_per_epoch) if enabled["polyak"] else None)


def select_params(params: Params, avg_state: AveragesState | None, which: str) -> Params:
  """``params`` for ``which='raw'``, else the named average (``'ema'`` or ``'polyak'``).

  Raises:
    ValueError: when ``which`` is unknown or names an average that is off.
  """
  if which == "raw":
    return params
  available = averaged_params(avg_state)
  if which not in available:
    raise ValueError(f"averaged parameters {which!r} are not available; available: "
                     f"{['raw'] + sorted(available)} (known: raw, ema, polyak).")
  return available[which]
