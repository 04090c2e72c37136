"""Data parallelism over all local devices with ``jax.sharding``.

One mesh axis ``'data'`` over every local device: each batch is split along its first axis
(``P('data')``), the train state is replicated (``P()``). ``jax.jit`` then inserts the gradient
all-reduce itself, so the same train step runs on 1 CPU, 8 CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), a GPU or a TPU slice.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


class DataParallel:
  """The mesh and the two shardings of a data-parallel run."""

  def __init__(self, devices: list | None = None):
    self.devices = list(devices if devices is not None else jax.local_devices())
    self.mesh = Mesh(np.asarray(self.devices), ("data",))
    self.batch = NamedSharding(self.mesh, P("data"))
    self.replicated = NamedSharding(self.mesh, P())

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  def check_batch_size(self, batch_size: int, name: str = "config.train.batch_size") -> None:
    """Raises ValueError when ``batch_size`` does not split evenly over the devices."""
    if int(batch_size) % self.num_devices:
      raise ValueError(f"{name}={batch_size} must be a multiple of the {self.num_devices} devices "
                       "of the data-parallel mesh.")

  def shard_batch(self, *arrays: Any) -> tuple[jax.Array, ...]:
    """Host arrays -> device arrays split along axis 0 over the mesh."""
    return tuple(jax.device_put(a, self.batch) for a in arrays)

  def replicate(self, tree: Any) -> Any:
    """A pytree copied onto every device of the mesh."""
    return jax.device_put(tree, self.replicated)
