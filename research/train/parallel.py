"""Data parallelism over every device of every process with ``jax.sharding``.

One mesh axis ``'data'`` over ``jax.devices()`` (all the devices of all the processes of a
``jax.distributed`` run; the local ones with a single process): each batch is split along its first
axis (``P('data')``), the train state is replicated (``P()``). ``jax.jit`` then inserts the
gradient all-reduce itself, so the same train step runs on 1 CPU, 8 CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), a GPU, a TPU slice or several hosts.

With several processes each one reads only its share of every global batch
(:meth:`DataParallel.local_rows`: the rows its own devices hold) and
:meth:`DataParallel.shard_batch` assembles the global array from the shares
(``jax.make_array_from_process_local_data``); the global batch order is the single process's.

:class:`MembersParallel` splits a population instead: the members axis of ``train_members``'s
stacked state over the devices of one process (``P('members')``), each device training its own
members (a machine with D devices trains up to D times as many members in the same time).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


class DataParallel:
  """The mesh and the two shardings of a data-parallel run."""

  def __init__(self, devices: list | None = None):
    self.devices = list(devices if devices is not None else jax.devices())
    self.mesh = Mesh(np.asarray(self.devices), ("data",))
    self.batch = NamedSharding(self.mesh, P("data"))
    # Several steps' batches stacked on a leading axis (config.train.steps_per_call): each step's
    # batch split over the devices as above.
    self.batches = NamedSharding(self.mesh, P(None, "data"))
    self.replicated = NamedSharding(self.mesh, P())

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  @functools.cached_property
  def num_processes(self) -> int:
    """How many processes own the mesh's devices."""
    return len({device.process_index for device in self.devices})

  def check_batch_size(self, batch_size: int, name: str = "config.train.batch_size") -> None:
    """Raises ValueError when ``batch_size`` does not split evenly over the devices."""
    if int(batch_size) % self.num_devices:
      raise ValueError(f"{name}={batch_size} must be a multiple of the {self.num_devices} devices "
                       "of the data-parallel mesh.")

  def local_rows(self, batch_size: int) -> slice:
    """The rows of a global batch of ``batch_size`` that this process's devices hold (all of
    them with one process): the only rows this process reads."""
    spans = sorted((index[0].start or 0, batch_size if index[0].stop is None else index[0].stop)
                   for index in self.batch.addressable_devices_indices_map((batch_size,)).values())
    start, stop = spans[0][0], spans[-1][1]
    # Device order makes each process's share one block; a mesh built otherwise would not.
    if sum(b - a for a, b in spans) != stop - start:
      raise ValueError(f"this process's devices hold rows {spans} of the batch, not one block.")
    return slice(start, stop)

  def shard_batch(self, *arrays: Any) -> tuple[jax.Array, ...]:
    """This process's rows of a global batch (:meth:`local_rows`) -> global device arrays split
    along axis 0 over the mesh (with one process: the whole batch)."""
    if self.num_processes == 1:
      return tuple(jax.device_put(a, self.batch) for a in arrays)
    return tuple(jax.make_array_from_process_local_data(self.batch, np.asarray(a))
                 for a in arrays)

  def shard_batches(self, *arrays: Any) -> tuple[jax.Array, ...]:
    """Like :meth:`shard_batch` for ``(steps, rows, ...)`` arrays: several steps' batches (this
    process's rows of each) stacked on a leading axis."""
    if self.num_processes == 1:
      return tuple(jax.device_put(a, self.batches) for a in arrays)
    return tuple(jax.make_array_from_process_local_data(self.batches, np.asarray(a))
                 for a in arrays)

  def replicate(self, tree: Any) -> Any:
    """A pytree copied onto every device of the mesh (the same host values on every process)."""
    return jax.device_put(tree, self.replicated)

  #: Steps dispatched ahead of the host at most in a run of several CPU processes (below).
  MAX_IN_FLIGHT_STEPS = 16

  @functools.cached_property
  def _throttled(self) -> bool:
    return self.num_processes > 1 and jax.default_backend() == "cpu"

  def throttle(self, step: int, taken: int, output: Any) -> None:
    """After dispatching steps ``step .. step + taken - 1`` (``output``: one of their results),
    waits for them each time :data:`MAX_IN_FLIGHT_STEPS` more were dispatched, in a run of
    several CPU processes (nothing otherwise).

    Why: XLA:CPU with gloo collectives stalls when too many steps are queued: a 157-step epoch of
    2 processes hung at the 140th dispatch, every time (none of the queued steps ran); with at
    most 16 in flight it trains. GPUs and TPUs keep JAX's own asynchronous dispatch.
    """
    if self._throttled and (step + taken) // self.MAX_IN_FLIGHT_STEPS > (
        step // self.MAX_IN_FLIGHT_STEPS):
      jax.block_until_ready(output)


def member_device_count(num_members: int, num_devices: int) -> int:
  """How many devices a population of ``num_members`` is spread over: the most of
  ``num_devices`` that divide it evenly (every device holds as many members; none is padding)."""
  return max(d for d in range(1, min(num_members, num_devices) + 1) if num_members % d == 0)


class MembersParallel:
  """A population's members axis split over devices: one mesh axis ``'members'``; the stacked
  state and every per-member array are split along their first axis (``P('members')``), the data
  is replicated, so each device trains its own members and nothing crosses devices."""

  def __init__(self, num_members: int, devices: list | None = None):
    available = list(devices if devices is not None else jax.local_devices())
    self.devices = available[:member_device_count(int(num_members), len(available))]
    self.mesh = Mesh(np.asarray(self.devices), ("members",))
    self.members = NamedSharding(self.mesh, P("members"))
    self.replicated = NamedSharding(self.mesh, P())

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  def shard(self, tree: Any) -> Any:
    """A pytree of stacked members (leading axis) split over the devices."""
    return jax.device_put(tree, self.members)

  def replicate(self, tree: Any) -> Any:
    """A pytree copied onto every device (the data every member reads)."""
    return jax.device_put(tree, self.replicated)
