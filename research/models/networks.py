"""The networks: an MLP, a small 2-D CNN and a 1-D CNN (flax linen, pure ``apply``).

Every hidden layer is ``[Dense|Conv] -> [BatchNorm] -> activation -> [Dropout]``; the activation
output is sown as ``intermediates/act_{i}`` so the monitors can histogram it (collected only when
``apply`` is called with ``mutable=['intermediates']``: free otherwise). Dropout is inverted
dropout (scaled at training time, identity at test time) and needs ``rngs={'dropout': key}`` when
``train=True``. Batch norm keeps running statistics in the ``batch_stats`` collection.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.models.initializers import kernel_init, scaled

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "sigmoid": nn.sigmoid}


def _kernels(module: nn.Module) -> nn.initializers.Initializer:
  """The kernel initializer a network's config names (scheme and, for normal/constant, std)."""
  return kernel_init(module.initializer, module.init_std)


class _Hidden(nn.Module):
  """Shared tail of a hidden layer: batch norm, activation (sown), dropout."""
  activation: str
  batch_norm: bool
  dropout: float
  index: int

  @nn.compact
  def __call__(self, h: jax.Array, train: bool) -> jax.Array:
    if self.batch_norm:
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="BatchNorm")(h)
    h = ACTIVATIONS[self.activation](h)
    self.sow("intermediates", f"act_{self.index}", h)
    if self.dropout > 0:
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return h


class MLP(nn.Module):
  """Fully connected classifier: ``x -> [Dense -> act]* -> Dense -> logits`` (inputs flattened)."""
  hidden_sizes: Sequence[int]
  num_classes: int
  activation: str = "relu"
  initializer: str = "he"
  batch_norm: bool = False
  dropout: float = 0.0
  output_scale: float = 0.1
  init_std: float = 0.01

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    h = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden_sizes):
      h = nn.Dense(width, kernel_init=_kernels(self), name=f"Dense_{i}")(h)
      h = _Hidden(self.activation, self.batch_norm, self.dropout, i, name=f"hidden_{i}")(h, train)
    return nn.Dense(self.num_classes,
                    kernel_init=scaled(_kernels(self), self.output_scale),
                    name=f"Dense_{len(self.hidden_sizes)}")(h)


class CNN(nn.Module):
  """Small 2-D CNN: ``[Conv3x3 -> act -> MaxPool2]* -> Dense(hidden) -> act -> Dense -> logits``."""
  features: Sequence[int]
  num_classes: int
  hidden: int = 128
  activation: str = "relu"
  initializer: str = "he"
  batch_norm: bool = False
  dropout: float = 0.0
  output_scale: float = 0.1
  init_std: float = 0.01
  kernel_size: tuple[int, ...] = (3, 3)
  pool: tuple[int, ...] = (2, 2)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    h = x
    for i, channels in enumerate(self.features):
      h = nn.Conv(channels, self.kernel_size, kernel_init=_kernels(self),
                  name=f"Conv_{i}")(h)
      h = _Hidden(self.activation, self.batch_norm, 0.0, i, name=f"hidden_{i}")(h, train)
      # Pool only while the map is large enough (8x8 digits allow two 2x2 pools).
      if all(s >= 2 * p for s, p in zip(h.shape[1:-1], self.pool)):
        h = nn.max_pool(h, self.pool, strides=self.pool)
    h = h.reshape((h.shape[0], -1))
    n = len(self.features)
    h = nn.Dense(self.hidden, kernel_init=_kernels(self), name="Dense_0")(h)
    h = _Hidden(self.activation, self.batch_norm, self.dropout, n, name=f"hidden_{n}")(h, train)
    return nn.Dense(self.num_classes,
                    kernel_init=scaled(_kernels(self), self.output_scale),
                    name="Dense_1")(h)


class CNN1D(CNN):
  """The same CNN over 1-D signals (MNIST-1D): kernel 5, pooling 2, inputs ``(N, L, C)``."""
  kernel_size: tuple[int, ...] = (5,)
  pool: tuple[int, ...] = (2,)
