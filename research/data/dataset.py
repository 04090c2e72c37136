"""The ``Dataset`` every capability trains on: fixed train/val/test split, train-only statistics.

``load_dataset(config.data)`` -> :class:`Dataset`. The split depends only on
``config.data.split_seed`` (never on the training seed, so runs with different seeds see the same
validation set), and inputs are standardized per feature with the mean and std of the *training*
split only (statistics of validation/test data must not leak into training).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from research.data import sources

DATASETS = ("digits", "mnist1d") + sources.TFDS_NAMES


class Dataset(NamedTuple):
  """Standardized float32 inputs and int32 labels of the three splits.

  ``input_shape`` is the shape of one example (``x_train.shape[1:]``); ``image_shape`` is
  ``(H, W, C)`` for image data (the first-layer weights figure uses it) and None otherwise.
  """
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  input_shape: tuple[int, ...]
  name: str
  image_shape: tuple[int, ...] | None


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Disjoint ``(train, val, test)`` index arrays covering ``range(n)``, shuffled by ``seed``."""
  order = np.random.default_rng(seed).permutation(n)
  n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
  return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]


def standardize(x_train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
  """``(x - mean) / std`` per feature, statistics from ``x_train`` only.

  Constant features (the always-blank corners of the digits) have std 0: they are only centred.
  """
  mean = x_train.mean(axis=0)
  std = x_train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  return tuple(((x - mean) / std).astype(np.float32) for x in (x_train,) + others)


def check_data_config(data_cfg: Any) -> None:
  """Validates ``config.data`` (name, fractions, subset) before anything is loaded."""
  name = data_cfg.name
  if name not in DATASETS:
    raise ValueError(f"config.data.name={name!r} is unknown; choose one of {', '.join(DATASETS)}.")
  for key in ("val_fraction", "test_fraction"):
    value = float(data_cfg.get(key, 0.15))
    if not 0.0 < value < 1.0:
      raise ValueError(f"config.data.{key}={value!r} must be in (0, 1).")
  if float(data_cfg.val_fraction) + float(data_cfg.test_fraction) >= 1.0:
    raise ValueError(f"config.data.val_fraction + test_fraction = "
                     f"{data_cfg.val_fraction + data_cfg.test_fraction} leaves no training data.")
  if int(data_cfg.get("subset", 0)) < 0:
    raise ValueError(f"config.data.subset={data_cfg.subset!r} must be >= 0 (0 = all).")
  reason = sources.unavailable_reason(name)
  if reason:
    raise ValueError(reason)


def load_dataset(data_cfg: Any) -> Dataset:
  """Loads, splits and standardizes the data set named by ``data_cfg.name``.

  Args:
    data_cfg: ``config.data`` (configs/default.py): ``name``, ``val_fraction``,
      ``test_fraction``, ``split_seed``, ``subset`` (> 0 keeps that many training examples).

  Raises:
    ValueError: unknown name or fractions out of range (the message lists what is allowed).
    RuntimeError: an optional data set that is not available here (says how to provide it).
  """
  check_data_config(data_cfg)
  name = data_cfg.name
  split_seed = int(data_cfg.get("split_seed", 0))
  if name == "digits":
    x, y, image_shape = sources.digits()
  elif name == "mnist1d":
    x, y, image_shape = sources.mnist1d(seed=split_seed)
  else:
    x, y, image_shape = sources.tfds_dataset(name, data_cfg.get("data_dir") or None)
  train, val, test = split_indices(len(x), float(data_cfg.val_fraction),
                                   float(data_cfg.test_fraction), split_seed)
  subset = int(data_cfg.get("subset", 0))
  if subset:
    train = train[:subset]
  x_train, x_val, x_test = standardize(x[train], x[val], x[test])
  return Dataset(x_train=x_train, y_train=y[train], x_val=x_val, y_val=y[val], x_test=x_test,
                 y_test=y[test], num_classes=int(y.max()) + 1, input_shape=tuple(x.shape[1:]),
                 name=name, image_shape=image_shape)
