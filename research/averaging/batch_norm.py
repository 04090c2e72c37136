"""Batch-norm statistics for averaged parameters: recomputed on a pass over the training data.

Why recompute: the running mean/variance kept during training describe the activations of the
*raw* iterates. An EMA/Polyak average of the weights produces different activations, and the
average of the per-iterate statistics is not the statistics of the averaged weights (the map from
weights to activation statistics is nonlinear). So, as SWA does (Izmailov et al. 2018; PyTorch's
``torch.optim.swa_utils.update_bn``), the statistics are recomputed with the averaged weights:
a forward pass in training mode over the training data, and each batch-norm layer's running
mean/variance is replaced by the equal-weight mean of the per-batch statistics.

Flax's ``nn.BatchNorm`` updates ``ra <- m * ra + (1 - m) * batch_stat`` with a momentum ``m`` fixed
inside the model. To read the plain per-batch statistic without knowing ``m`` we apply the model
with zeroed statistics (giving ``(1 - m) * batch_stat``) and once with all-ones statistics (giving
``m + (1 - m) * batch_stat``), which measures ``m`` per entry; this probe is done once.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = Any


def recompute_batch_stats(model, params: Params, batch_stats: Params, x_train,
                          batch_size: int = 256, num_batches: int | None = None,
                          rng: jax.Array | None = None) -> Params:
  """The batch-norm statistics of ``params`` over the training inputs ``x_train``.

  Args:
    model: the flax linen module (``model.apply(variables, x, train=True, rngs=...,
      mutable=['batch_stats'])`` must update the ``batch_stats`` collection).
    params: the (averaged) parameters.
    batch_stats: the current statistics (only their structure is used); an empty/None tree means
      the model has no batch norm and is returned unchanged.
    x_train: training inputs, shape ``(N, ...)``.
    batch_size: examples per forward pass (the statistics are per-batch, as in training).
    num_batches: use only the first ``num_batches`` batches (None: one full pass).
    rng: key for dropout during the pass (dropout is active in training mode).

  Returns:
    A pytree like ``batch_stats``: for each running statistic, the mean over batches of the batch
    statistic computed with ``params`` in training mode.

  Raises:
    ValueError: when ``batch_size`` < 1 or ``x_train`` is empty.
  """
  if not jax.tree.leaves(batch_stats):
    return batch_stats
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size!r} must be >= 1.")
  n = len(x_train)
  if n == 0:
    raise ValueError("x_train is empty: the batch-norm statistics need training inputs.")
  rng = jax.random.PRNGKey(0) if rng is None else rng

  @jax.jit
  def forward_stats(stats, x, key):
    _, updates = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                             rngs={"dropout": key}, mutable=["batch_stats"])
    return updates["batch_stats"]

  zeros = jax.tree.map(jnp.zeros_like, batch_stats)
  ones = jax.tree.map(jnp.ones_like, batch_stats)
  starts = list(range(0, n, batch_size))
  if num_batches is not None:
    starts = starts[:max(1, int(num_batches))]
  total = None
  momentum = None
  for i, start in enumerate(starts):
    x = jnp.asarray(np.asarray(x_train[start:start + batch_size]))
    key = jax.random.fold_in(rng, i)
    scaled = forward_stats(zeros, x, key)  # (1 - m) * batch statistic
    if momentum is None:
      momentum = jax.tree.map(lambda hi, lo: hi - lo, forward_stats(ones, x, key), scaled)
    batch = jax.tree.map(lambda s, m: s / (1.0 - m), scaled, momentum)
    total = batch if total is None else jax.tree.map(jnp.add, total, batch)
  return jax.tree.map(lambda t: t / len(starts), total)
