"""Batched evaluation, written once: one model or K stacked members, metrics or logits.

``evaluate`` averages an eval step's metrics over a split in batches, each batch weighted by its
size (the last batch may be smaller), so the result is the mean over the examples whatever the
batch size. A vmapped eval step over K stacked members returns arrays of shape ``(K,)`` per
metric; ``evaluate`` keeps that axis. ``predict`` concatenates per-batch outputs (logits);
``make_members_eval_step(model)`` is the eval step of K stacked members.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from research.train.steps import make_eval_step


def batches(x: np.ndarray, batch_size: int) -> Iterator[slice]:
  """Slices of ``range(len(x))`` of at most ``batch_size`` examples, in order."""
  if int(batch_size) < 1:
    raise ValueError(f"batch_size={batch_size!r} must be >= 1.")
  for start in range(0, len(x), int(batch_size)):
    yield slice(start, start + int(batch_size))


def evaluate(eval_step: Callable[..., dict], params: Any, batch_stats: Any, x: np.ndarray,
             y: np.ndarray, batch_size: int, put: Callable[[Any], Any] = jnp.asarray
             ) -> dict[str, Any]:
  """``mean_i metric(x_i, y_i)`` of ``eval_step(params, batch_stats, x, y) -> {metric: value}``.

  Args:
    eval_step: a (jitted) batch step returning batch means (scalars, or ``(K,)`` arrays for a
      vmapped step over stacked members).
    params, batch_stats: the variables (stacked for members).
    x, y: the split.
    batch_size: examples per call.
    put: host array -> device array (e.g. a data-parallel ``replicate``).

  Returns:
    ``{metric: float}`` (or ``np.ndarray`` of shape ``(K,)`` for members), float64 sums.
  """
  outputs = []
  for part in batches(x, batch_size):   # dispatch every batch first, read back after
    outputs.append((len(x[part]), eval_step(params, batch_stats, put(x[part]), put(y[part]))))
  totals: dict[str, Any] = {}
  for n, out in outputs:
    for key, value in jax.device_get(out).items():
      totals[key] = totals.get(key, 0.0) + np.asarray(value, np.float64) * n
  means = {key: value / len(x) for key, value in totals.items()}
  return {key: float(value) if np.ndim(value) == 0 else value for key, value in means.items()}


def make_members_eval_step(model) -> Callable[..., dict]:
  """``eval_step(params, batch_stats, x, y) -> {'loss', 'accuracy'}`` of K stacked members (their
  variables with a leading member axis, one batch for all): ``make_eval_step`` vmapped and
  jitted, each metric of shape ``(K,)``; :func:`evaluate` takes it like a single model's step."""
  return jax.jit(jax.vmap(make_eval_step(model), in_axes=(0, 0, None, None)))


def predict(apply_fn: Callable[[Any, jax.Array], jax.Array], variables: Any, x: np.ndarray,
            batch_size: int, axis: int = 0) -> np.ndarray:
  """``apply_fn(variables, x_batch)`` over ``x`` in batches, concatenated along ``axis`` (0 for one
  model's ``(N, C)`` logits, 1 for K stacked members' ``(K, N, C)``)."""
  outputs = [apply_fn(variables, jnp.asarray(x[part], jnp.float32))
             for part in batches(x, batch_size)]
  return np.concatenate([np.asarray(o) for o in outputs], axis=axis)
