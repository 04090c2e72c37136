"""Where the raw examples come from: embedded digits, generated MNIST-1D, optional TFDS.

Every source returns ``(x, y, image_shape)`` with ``x`` float (N, ...) and ``y`` int labels, or a
pair of such splits when the source ships its own test split. Nothing here touches the network:
digits are bundled with scikit-learn, MNIST-1D is *generated* (``mnist1d.data.make_dataset``; its
``get_dataset`` would try a download), and TFDS data sets are read only when already prepared.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np


class DataUnavailableError(RuntimeError):
  """An optional data set that is not available on this machine (the message says how to get
  it); the embedded ones ('digits', 'mnist1d') always are."""


def unavailable_reason(name: str) -> str | None:
  """Why data set ``name`` cannot be loaded here (a missing optional package), checked without
  importing anything heavy; None when it can be tried."""
  if name in TFDS_NAMES and importlib.util.find_spec("tensorflow_datasets") is None:
    return (f"config.data.name={name!r} needs tensorflow-datasets, which is not installed; "
            f"{_tfds_how(name)}. The embedded data sets are 'digits' and 'mnist1d'.")
  if name == "digits" and importlib.util.find_spec("sklearn") is None:
    return ("config.data.name='digits' needs scikit-learn (it bundles the digits): pip install "
            "scikit-learn")
  if name == "mnist1d" and importlib.util.find_spec("mnist1d") is None:
    return "config.data.name='mnist1d' needs the mnist1d package: pip install mnist1d"
  return None


def _tfds_how(name: str) -> str:
  return (f"prepare it on a machine with network access with `pip install tensorflow-datasets "
          f"tensorflow && python -c \"import tensorflow_datasets as tfds; tfds.load('{name}')\"` "
          "and copy ~/tensorflow_datasets here (or set config.data.data_dir)")


def _digits_csv() -> str:
  """The path of scikit-learn's bundled ``digits.csv.gz``, found without importing scikit-learn
  (importing it costs seconds; the file is all we need)."""
  spec = importlib.util.find_spec("sklearn")
  if spec is None or not spec.submodule_search_locations:
    raise DataUnavailableError("config.data.name='digits' needs scikit-learn (it bundles the "
                               "digits): pip install scikit-learn")
  for root in spec.submodule_search_locations:
    path = os.path.join(root, "datasets", "data", "digits.csv.gz")
    if os.path.exists(path):
      return path
  raise DataUnavailableError("scikit-learn's bundled digits.csv.gz was not found; reinstall "
                             "scikit-learn")


@functools.lru_cache(maxsize=1)
def _read_digits() -> tuple[np.ndarray, np.ndarray]:
  table = np.loadtxt(_digits_csv(), delimiter=",", dtype=np.float32)
  return table[:, :-1].reshape(-1, 8, 8, 1), table[:, -1].astype(np.int32)


def digits() -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
  """scikit-learn's bundled 8x8 digits: 1797 images, 10 classes, pixels 0..16, as (N, 8, 8, 1)
  (the same arrays as ``sklearn.datasets.load_digits()``, read from its CSV file)."""
  x, y = _read_digits()
  return x.copy(), y.copy(), (8, 8, 1)


def mnist1d(seed: int = 0, num_samples: int = 5000) -> tuple[np.ndarray, np.ndarray, None]:
  """MNIST-1D generated on the spot (Greydanus 2020): 40-sample signals, 10 classes, as (N, 40, 1).

  Generation takes a few seconds, so it is cached per process (copies are returned).

  The generator's own train/test split is ignored: the caller splits with its fixed seed like
  every other source. ``image_shape`` is None (a 1-D signal, not an image).
  """
  x, y = _generate_mnist1d(int(seed), int(num_samples))
  return x.copy(), y.copy(), None


@functools.lru_cache(maxsize=2)
def _generate_mnist1d(seed: int, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
  try:
    from mnist1d.data import get_dataset_args, make_dataset
  except ImportError:
    raise DataUnavailableError("config.data.name='mnist1d' needs the mnist1d package: pip "
                               "install mnist1d") from None
  args = get_dataset_args()
  args.num_samples = int(num_samples)
  args.seed = int(seed)
  data = make_dataset(args)
  x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)[..., None]
  y = np.concatenate([data["y"], data["y_test"]]).astype(np.int32)
  return x, y


TFDS_NAMES = ("mnist", "fashion_mnist", "cifar10")


def tfds_dataset(name: str, data_dir: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
  """A TFDS image data set that is already prepared on disk (never downloaded).

  Raises:
    RuntimeError: tensorflow-datasets is not installed, or the data set is not prepared, with the
      command that prepares it on a machine with network access.
  """
  how = _tfds_how(name)
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise DataUnavailableError(unavailable_reason(name) or f"tensorflow-datasets: {how}") from None
  try:
    splits = tfds.as_numpy(tfds.load(name, split=["train", "test"], batch_size=-1,
                                     download=False, data_dir=data_dir))
  except Exception as e:  # noqa: BLE001 - TFDS raises many kinds for data that is not there
    raise DataUnavailableError(f"config.data.name={name!r}: the prepared TFDS data was not "
                               f"found ({type(e).__name__}: {e}); {how}.") from None
  x = np.concatenate([s["image"] for s in splits]).astype(np.float32)
  y = np.concatenate([s["label"] for s in splits]).astype(np.int32)
  return x, y, tuple(x.shape[1:])
