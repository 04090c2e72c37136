"""Which coordinates and directions the gradient check perturbs.

Coordinates are sampled *per leaf* (every bias included), never from one flattened vector of
all parameters, where a 10-element bias next to a 65k-element kernel would almost never be drawn.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np


def path_string(path) -> str:
  """``Dense_0/kernel`` style name of a pytree path (as used by research.monitor)."""
  parts = []
  for key in path:
    if isinstance(key, jax.tree_util.DictKey):
      parts.append(str(key.key))
    elif isinstance(key, jax.tree_util.GetAttrKey):
      parts.append(str(key.name))
    elif isinstance(key, jax.tree_util.SequenceKey):
      parts.append(str(key.idx))
    elif isinstance(key, jax.tree_util.FlattenedIndexKey):
      parts.append(str(key.key))
    else:  # pragma: no cover - future key types
      parts.append(str(key))
  return "/".join(parts) or "<root>"


def leaf_paths(tree: Any) -> list[str]:
  """The path string of every leaf of ``tree``, in ``tree_leaves`` order."""
  with_paths, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [path_string(path) for path, _ in with_paths]


def num_coordinates(size: int, coords_per_leaf: int, full_leaf_size: int) -> int:
  """How many coordinates of a leaf with ``size`` entries are checked.

  All of them when ``size <= max(coords_per_leaf, full_leaf_size)``; else ``coords_per_leaf``.
  """
  if size <= max(coords_per_leaf, full_leaf_size):
    return size
  return coords_per_leaf


def sample_coordinates(shapes: list[tuple], coords_per_leaf: int, full_leaf_size: int,
                       seed: int) -> list[np.ndarray]:
  """Sorted flat indices, sampled without replacement independently for every leaf."""
  rng = np.random.default_rng(seed)
  samples = []
  for shape in shapes:
    size = int(np.prod(shape, dtype=np.int64))
    count = num_coordinates(size, coords_per_leaf, full_leaf_size)
    if count == size:
      indices = np.arange(size)
    else:
      indices = np.sort(rng.choice(size, size=count, replace=False))
    samples.append(indices.astype(np.int32))
  return samples


def random_directions(shapes: list[tuple], count: int, seed: int) -> list[np.ndarray]:
  """``count`` Gaussian directions over the whole pytree, each of unit global norm.

  Returned per leaf with a leading axis of size ``count`` (float64).
  """
  rng = np.random.default_rng(seed)
  leaves = [rng.standard_normal((count,) + tuple(shape)) for shape in shapes]
  if count == 0:
    return leaves
  norms = np.sqrt(sum(np.sum(leaf.reshape(count, -1) ** 2, axis=1) for leaf in leaves)
                  if leaves else np.ones(count))
  norms = np.where(norms == 0, 1.0, norms)
  return [leaf / norms.reshape((count,) + (1,) * len(shape)) for leaf, shape in
          zip(leaves, shapes)]
