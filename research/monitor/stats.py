"""Jittable babysitting statistics, computed inside the jitted train step.

Everything here is a pure function of pytrees with static output shapes (fixed bin counts), so it
can run inside ``jax.jit``/``jax.vmap`` every ``config.monitor.every_steps`` steps (e.g. under a
``jax.lax.cond`` on ``step % every_steps == 0``, or in a separate jitted "monitored" step that the
loop calls every N steps).

How the training loop uses it (the data path: ``research.train.make_train_step(...,
monitored=True)``, whose loss captures the sown activations)::

    update = research.train.apply_update(tx, loss_fn, params, opt_state, need_updates=True)
    ratios = update_ratios(update.updates, params)   # params BEFORE the update
    stats = layer_statistics(update.aux['intermediates'], update.grads, activation, bins)
    # host side, after jax.device_get:
    writer.write_update_ratios(epoch, ratios)
    writer.write_layer_statistics(epoch, stats)       # histograms + dead/saturated fractions

Keys: parameter leaves are named by their path joined with '/', e.g. ``Dense_0/kernel``;
activation layers by their sow name, e.g. ``act_0``.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

# Thresholds defining a "saturated" unit: tanh |h| > 0.99; sigmoid h < 0.01 or h > 0.99.
SATURATION_MARGIN = 0.01

# Histograms are computed on at most this many values per tensor (a strided subsample).
HISTOGRAM_MAX_VALUES = 4096

# Activation histograms span the data's robust range per layer and sample: from its 0.1% to its
# 99.9% quantile, so one outlier does not squash the rest into a few bins and no bulk of values is
# clipped into an end bin (a fixed [0, 5] for relu drew the CNN's dense layer, whose activations
# reach ~40, as a false spike at 5).
ROBUST_TAIL = 1e-3
# The quantiles come from two passes of a RANGE_BINS-bin histogram (the first over [min, max],
# the second over the span between the first's quantile bins): the range is exact to 1/1024 of
# itself unless an outlier sits over 1e6 times farther out; ~0.1 ms on CPU for 4096 values, where
# a sort (or lax.top_k, which sorts on CPU) costs ~1.5 ms.
RANGE_BINS = 1024

# The activations' own ranges: where a histogram falls back to when the data has no finite range
# (all NaN), and what bounds tanh/sigmoid histograms.
DEFAULT_ACTIVATION_RANGES = {
    "relu": (0.0, 5.0),
    "tanh": (-1.0, 1.0),
    "sigmoid": (0.0, 1.0),
}
ACTIVATIONS = tuple(DEFAULT_ACTIVATION_RANGES)


def leaf_name(path) -> str:
  """'Dense_0/kernel' for the key path ``('Dense_0', 'kernel')`` of a flax params dict."""
  return jax.tree_util.keystr(path, simple=True, separator="/")


def named_leaves(tree: Any) -> dict[str, jax.Array]:
  """Flattens a pytree into ``{path string: leaf}`` (see :func:`leaf_name`)."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {leaf_name(path): leaf for path, leaf in leaves}


def _norm(x: jax.Array) -> jax.Array:
  x = jnp.asarray(x)
  return jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32))))


def update_ratios(updates: Any, params: Any, eps: float = 1e-12) -> dict[str, jax.Array]:
  """Update/weight ratio per parameter leaf: ``||update||_2 / (||param||_2 + eps)``.

  ``updates`` is the delta that ``optax.apply_updates`` ADDS (already scaled by the learning
  rate), ``params`` the parameters it is added to (before the update). The playbook's rule of
  thumb (CS231n, "Babysitting the learning process"): the ratio should be around 1e-3 for the
  weights; much lower means the learning rate is likely too low, much higher too high. Biases often
  start at zero, so their ratio is huge early on; judge the ``.../kernel`` leaves.

  Returns:
    ``{'Dense_0/kernel': scalar float32, ...}`` with the same leaves as ``params``.
  """
  named_updates = named_leaves(updates)
  named_params = named_leaves(params)
  if named_updates.keys() != named_params.keys():
    raise ValueError(
        "update_ratios: updates and params must have the same leaves; got updates="
        f"{sorted(named_updates)} params={sorted(named_params)}")
  return {name: _norm(named_updates[name]) / (_norm(named_params[name]) + eps)
          for name in named_params}


def strided_sample(values: jax.Array, max_values: int | None) -> jax.Array:
  """The flattened ``values``, or every k-th of them (k = ceil(size / max_values)) when larger.

  A deterministic, static-shape subsample: histograms only need the SHAPE of a distribution, and
  a scatter-add over every gradient entry of a big kernel costs as much as the train step.
  """
  flat = jnp.ravel(jnp.asarray(values))
  if max_values is None or flat.size <= max_values:
    return flat
  stride = -(-flat.size // max_values)
  return flat[::stride]


def histogram(values: jax.Array, bins: int, value_range: tuple[Any, Any],
              max_values: int | None = None) -> jax.Array:
  """Counts of ``values`` in ``bins`` equal bins over ``value_range``; static shape ``(bins,)``.

  Values outside the range are counted in the first/last bin (so the counts sum to
  ``values.size``, or to the subsample size when ``max_values`` is given, see
  :func:`strided_sample`); NaNs are not counted. Works with traced range endpoints.
  """
  if bins < 1:
    raise ValueError(f"bins must be a positive integer, got bins={bins!r}")
  values = strided_sample(values, max_values).astype(jnp.float32)
  lo = jnp.asarray(value_range[0], jnp.float32)
  hi = jnp.asarray(value_range[1], jnp.float32)
  width = jnp.where(hi > lo, hi - lo, 1.0)
  index = jnp.floor((values - lo) / width * bins)
  index = jnp.clip(jnp.nan_to_num(index, nan=-1.0), 0, bins - 1).astype(jnp.int32)
  weights = jnp.where(jnp.isnan(values), 0.0, 1.0)
  return jnp.zeros((bins,), jnp.float32).at[index].add(weights)


def _quantile_edges(values: jax.Array, weights: jax.Array, lo: jax.Array, hi: jax.Array,
                    tail: float, bins: int) -> tuple[jax.Array, jax.Array]:
  """Bin edges around the ``tail`` and ``1 - tail`` quantiles of ``values`` (those with weight
  1), from a ``bins``-bin histogram over ``[lo, hi]`` (values outside count in the end bins)."""
  width = jnp.where(hi > lo, hi - lo, 1.0) / bins
  index = jnp.clip(jnp.floor((values - lo) / width), 0, bins - 1).astype(jnp.int32)
  cumulative = jnp.cumsum(jnp.zeros((bins,), jnp.float32).at[index].add(weights))
  total = cumulative[-1]
  first = jnp.searchsorted(cumulative, tail * total, side="right")  # bin of the low quantile
  last = jnp.searchsorted(cumulative, (1.0 - tail) * total, side="left")  # of the high one
  return lo + first * width, lo + (jnp.minimum(last, bins - 1) + 1) * width


def robust_range(values: jax.Array, fallback: tuple[float, float],
                 tail: float = ROBUST_TAIL, bins: int = RANGE_BINS) -> tuple[jax.Array, jax.Array]:
  """``(lo, hi)`` just outside the ``tail`` and ``1 - tail`` quantiles of the finite ``values``
  (by at most ``(hi - lo) / bins``); ``fallback`` when there is no finite range. Jittable.

  Two passes of a ``bins``-bin histogram: the first over ``[min, max]`` finds the quantiles'
  bins, the second refines over the span between them (one outlier 1e3 times farther out than
  the bulk leaves the bulk in a handful of first-pass bins; the second pass spreads it again).
  """
  flat = jnp.ravel(values).astype(jnp.float32)
  finite = jnp.isfinite(flat)
  weights = finite.astype(jnp.float32)
  lo = jnp.min(jnp.where(finite, flat, jnp.inf))
  hi = jnp.max(jnp.where(finite, flat, -jnp.inf))
  ok = jnp.isfinite(lo) & jnp.isfinite(hi) & (hi > lo)
  lo, hi = jnp.where(ok, lo, 0.0), jnp.where(ok, hi, 1.0)
  clean = jnp.where(finite, flat, lo)
  for _ in range(2):
    lo, hi = _quantile_edges(clean, weights, lo, hi, tail, bins)
  ok &= hi > lo
  return (jnp.where(ok, lo, fallback[0]).astype(jnp.float32),
          jnp.where(ok, hi, fallback[1]).astype(jnp.float32))


def activation_layers(intermediates: Any) -> dict[str, jax.Array]:
  """``{'act_0': array, ...}`` from a flax 'intermediates' collection (sow stores tuples).

  Accepts the collection itself, or the whole mutated-variables dict containing it, and nested
  submodules (``{'MLP_0': {'act_0': (h,)}}``); the layer name is the last path component that
  starts with ``act_``. Several sown values for one name are concatenated along the batch axis.
  """
  if isinstance(intermediates, Mapping) and "intermediates" in intermediates:
    intermediates = intermediates["intermediates"]
  layers: dict[str, list[jax.Array]] = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
    parts = leaf_name(path).split("/")
    names = [p for p in parts if p.startswith("act_")]
    if not names:
      continue
    layers.setdefault(names[-1], []).append(leaf)
  out = {}
  for name, values in layers.items():
    out[name] = values[0] if len(values) == 1 else jnp.concatenate(
        [jnp.reshape(v, (-1,) + v.shape[1:]) for v in values], axis=0)
  # Natural order act_0, act_1, ..., act_10.
  return dict(sorted(out.items(), key=lambda kv: (len(kv[0]), kv[0])))


def activation_statistics(h: jax.Array, activation: str, bins: int,
                          value_range: tuple[float, float] | None = None,
                          max_values: int | None = HISTOGRAM_MAX_VALUES) -> dict[str, jax.Array]:
  """Statistics of one layer's post-activation output ``h`` (batch first, features last).

  * ``act_counts`` (bins,), ``act_edges`` (bins + 1,): histogram of a strided subsample of at
    most ``max_values`` values over ``value_range``, by default the data's robust range
    (:func:`robust_range`: the 0.1% tails fall in the end bins), within the activation's own
    range for tanh/sigmoid;
  * ``act_mean``, ``act_std``;
  * relu: ``dead_fraction`` = fraction of units (last axis; for conv maps, channels over all
    positions) that are exactly zero for EVERY example of the batch;
  * tanh: ``saturated_fraction`` = fraction of values with ``|h| > 1 - 0.01``;
    sigmoid: fraction with ``h < 0.01`` or ``h > 0.99``.
  """
  if activation not in DEFAULT_ACTIVATION_RANGES:
    raise ValueError(f"activation={activation!r} is not known; known: {list(ACTIVATIONS)}")
  h = jnp.asarray(h).astype(jnp.float32)
  sample = strided_sample(h, max_values)
  if value_range is None:
    bounds = DEFAULT_ACTIVATION_RANGES[activation]
    lo, hi = robust_range(sample, bounds)
    if activation != "relu":  # bounded activations: never draw outside their range
      lo, hi = jnp.maximum(lo, bounds[0]), jnp.minimum(hi, bounds[1])
    if activation == "relu":  # relu's zeros are the layer's story: keep 0 as the left edge
      lo = jnp.minimum(lo, 0.0)
    value_range = (lo, hi)
  lo, hi = (jnp.asarray(v, jnp.float32) for v in value_range)
  stats = {
      "act_counts": histogram(sample, bins, (lo, hi)),
      "act_edges": lo + (hi - lo) * jnp.linspace(0.0, 1.0, bins + 1, dtype=jnp.float32),
      "act_mean": jnp.mean(h),
      "act_std": jnp.std(h),
  }
  if activation == "relu":
    active_somewhere = jnp.any(h.reshape(-1, h.shape[-1]) > 0, axis=0)
    stats["dead_fraction"] = 1.0 - jnp.mean(active_somewhere.astype(jnp.float32))
  elif activation == "tanh":
    stats["saturated_fraction"] = jnp.mean((jnp.abs(h) > 1 - SATURATION_MARGIN).astype(jnp.float32))
  else:  # sigmoid
    saturated = (h < SATURATION_MARGIN) | (h > 1 - SATURATION_MARGIN)
    stats["saturated_fraction"] = jnp.mean(saturated.astype(jnp.float32))
  return stats


def gradient_statistics(g: jax.Array, bins: int,
                        max_values: int | None = HISTOGRAM_MAX_VALUES) -> dict[str, jax.Array]:
  """Histogram of one gradient leaf over the symmetric range ``[-max|g|, max|g|]``, plus its norm.

  The edges depend on the data (gradients span orders of magnitude), but the SHAPES are static:
  ``grad_counts`` (bins,), ``grad_edges`` (bins + 1,), ``grad_norm`` scalar (of all of ``g``).
  The histogram uses a strided subsample of at most ``max_values`` entries.
  """
  g = jnp.asarray(g).astype(jnp.float32)
  sample = strided_sample(g, max_values)
  bound = jnp.max(jnp.abs(sample))
  bound = jnp.where(jnp.isfinite(bound) & (bound > 0), bound, 1.0)
  return {
      "grad_counts": histogram(sample, bins, (-bound, bound)),
      "grad_edges": jnp.linspace(-1.0, 1.0, bins + 1, dtype=jnp.float32) * bound,
      "grad_norm": _norm(g),
  }


def layer_statistics(intermediates: Any, grads: Any, activation: str, bins: int,
                     value_range: tuple[float, float] | None = None,
                     max_values: int | None = HISTOGRAM_MAX_VALUES
                     ) -> dict[str, dict[str, jax.Array]]:
  """Per-layer activation and per-leaf gradient statistics (jittable, static shapes).

  Args:
    intermediates: the flax ``'intermediates'`` collection (or the mutated variables dict holding
      it) from ``model.apply(..., mutable=['intermediates'])``; layers sow ``act_{i}``.
    grads: the gradient pytree (same structure as params).
    activation: ``'relu' | 'tanh' | 'sigmoid'`` (static), selects dead vs saturated fraction.
    bins: number of histogram bins (static), ``config.monitor.histogram_bins``.
    value_range: a fixed activation-histogram range; default (None): each layer's robust data
      range at each sample (:func:`robust_range`).
    max_values: histograms use a strided subsample of at most this many values per tensor
      (None: all); means, stds, dead/saturated fractions and norms always use every value.

  Returns:
    ``{'act_0': {act_counts, act_edges, act_mean, act_std, dead_fraction | saturated_fraction},
       ..., 'Dense_0/kernel': {grad_counts, grad_edges, grad_norm}, ...}``.
  """
  out: dict[str, dict[str, jax.Array]] = {}
  for name, h in activation_layers(intermediates).items():
    out[name] = activation_statistics(h, activation, bins, value_range, max_values)
  for name, g in named_leaves(grads).items():
    out[name] = gradient_statistics(g, bins, max_values)
  return out
