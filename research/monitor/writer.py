"""Host-side writer of babysitting data: TensorBoard events + JSON lines in the workdir.

Everything ``make_figures(workdir)`` and ``verdict(...)`` need lives in the workdir, so figures can
be redrawn from the workdir alone (``python scripts/make_figures.py --workdir=<dir>``):

``<workdir>/metrics.jsonl``
    One JSON object per ``write_scalars`` call: ``{"epoch": <float>, <name>: <float>, ...}``.
    Key conventions read by the figures and the verdict (the training loop writes these):

    * per epoch (``epoch`` = number of epochs completed, i.e. 1.0 after the first epoch):
      ``train_loss`` (epoch mean), ``train_accuracy``, ``val_loss``, ``val_accuracy``,
      ``learning_rate``, ``time``;
    * per batch (fractional epochs, see :meth:`MetricsWriter.write_batch_losses`): ``batch_loss``;
    * sampled every N steps (:meth:`MetricsWriter.write_update_ratios`):
      ``update_ratio/<leaf>`` e.g. ``update_ratio/Dense_0/kernel``;
    * sampled every N steps (:meth:`MetricsWriter.write_layer_statistics`):
      ``act_0/mean``, ``act_0/std``, ``act_0/dead_fraction`` (relu) or
      ``act_0/saturated_fraction`` (tanh/sigmoid), ``grad_norm/<leaf>``.

    Non-finite values are written as JSON ``NaN``/``Infinity`` (Python's json reads them back).
``<workdir>/histograms.jsonl``
    One object per ``write_histogram`` call: ``{"epoch", "tag", "counts": [...], "edges": [...]}``.
    Tags: ``activations/act_0``, ``gradients/Dense_0/kernel``.
``<workdir>/first_layer.npz``
    ``kernel`` and ``image_shape`` (empty when not an image), written by :func:`save_first_layer`
    (call it at the end of training with ``params['Dense_0']['kernel']`` or the first conv kernel).
TensorBoard events (tensorboardX) in ``<workdir>/tensorboard``; the TensorBoard step is the epoch
in milli-epochs (``round(1000 * epoch)``), since TensorBoard steps must be integers.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

METRICS_FILE = "metrics.jsonl"
HISTOGRAMS_FILE = "histograms.jsonl"
FIRST_LAYER_FILE = "first_layer.npz"
TENSORBOARD_DIR = "tensorboard"
STEPS_PER_EPOCH_IN_TENSORBOARD = 1000


def _to_float(name: str, value: Any) -> float:
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f"scalar {name!r} must have exactly one element, got shape {array.shape}")
  return float(array.reshape(()))


def _flatten(scalars: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  out = {}
  for key, value in scalars.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      out.update(_flatten(value, name + "/"))
    else:
      out[name] = _to_float(name, value)
  return out


class MetricsWriter:
  """Writes scalars and histograms to TensorBoard (tensorboardX) and to JSON lines in ``workdir``.

  Usage::

    writer = MetricsWriter(workdir)
    writer.write_batch_losses(epoch_index, losses)          # after each epoch (one device_get)
    writer.write_scalars(epoch_index + 1, {'train_loss': ..., 'val_accuracy': ...})
    writer.write_update_ratios(fractional_epoch, ratios)    # every N steps
    writer.write_layer_statistics(fractional_epoch, stats)  # every N steps
    writer.close()

  Appends (never truncates), so a resumed run continues the same files.
  """

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.workdir = os.fspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self._metrics = open(os.path.join(self.workdir, METRICS_FILE), "a", encoding="utf-8")
    self._histograms = open(os.path.join(self.workdir, HISTOGRAMS_FILE), "a", encoding="utf-8")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(self.workdir, TENSORBOARD_DIR))

  @staticmethod
  def _step(epoch: float) -> int:
    return int(round(STEPS_PER_EPOCH_IN_TENSORBOARD * float(epoch)))

  def write_scalars(self, epoch: float, scalars: Mapping[str, Any]) -> None:
    """Appends ``{"epoch": epoch, **scalars}`` to metrics.jsonl and logs each scalar to TensorBoard.

    Nested dicts are flattened with '/' (``{'update_ratio': {'Dense_0/kernel': r}}`` ->
    ``update_ratio/Dense_0/kernel``). Values may be Python/numpy/jax scalars.
    """
    flat = _flatten(scalars)
    if "epoch" in flat:
      raise ValueError("scalars must not contain the key 'epoch' (it is the `epoch` argument)")
    record = {"epoch": float(epoch), **flat}
    self._metrics.write(json.dumps(record) + "\n")
    self._metrics.flush()
    if self._tb is not None:
      step = self._step(epoch)
      for name, value in flat.items():
        self._tb.add_scalar(name, value, global_step=step)

  def write_batch_losses(self, epoch_index: int, losses: Sequence[Any]) -> None:
    """Writes one ``batch_loss`` record per batch of epoch ``epoch_index`` (0-based).

    Batch ``i`` of ``n`` gets epoch ``epoch_index + (i + 1) / n``, so the per-batch curve and the
    epoch means (written at ``epoch_index + 1``) share the x-axis.
    """
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    n = len(losses)
    for i, loss in enumerate(losses):
      self.write_scalars(epoch_index + (i + 1) / n, {"batch_loss": loss})

  def write_histogram(self, epoch: float, tag: str, counts: Any, edges: Any) -> None:
    """Writes one histogram (``len(edges) == len(counts) + 1``) to TensorBoard and histograms.jsonl."""
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    edges = np.asarray(edges, dtype=np.float64).reshape(-1)
    if edges.shape[0] != counts.shape[0] + 1:
      raise ValueError(
          f"histogram {tag!r}: need len(edges) == len(counts) + 1, got {edges.shape[0]} edges "
          f"and {counts.shape[0]} counts")
    record = {"epoch": float(epoch), "tag": tag, "counts": counts.tolist(), "edges": edges.tolist()}
    self._histograms.write(json.dumps(record) + "\n")
    self._histograms.flush()
    if self._tb is not None and counts.sum() > 0:
      centers = 0.5 * (edges[:-1] + edges[1:])
      total = float(counts.sum())
      self._tb.add_histogram_raw(
          tag, min=float(edges[0]), max=float(edges[-1]), num=total,
          sum=float((counts * centers).sum()), sum_squares=float((counts * centers**2).sum()),
          bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(),
          global_step=self._step(epoch))

  def write_update_ratios(self, epoch: float, ratios: Mapping[str, Any]) -> None:
    """Writes the output of ``update_ratios`` as ``update_ratio/<leaf>`` scalars."""
    self.write_scalars(epoch, {f"update_ratio/{name}": value for name, value in ratios.items()})

  def write_layer_statistics(self, epoch: float, stats: Mapping[str, Mapping[str, Any]]) -> None:
    """Writes the output of ``layer_statistics``: histograms plus summary scalars.

    Activation layers -> histogram ``activations/<layer>`` and scalars ``<layer>/mean``,
    ``<layer>/std``, ``<layer>/dead_fraction`` or ``<layer>/saturated_fraction``;
    gradient leaves -> histogram ``gradients/<leaf>`` and scalar ``grad_norm/<leaf>``.
    """
    scalars = {}
    for name, s in stats.items():
      if "act_counts" in s:
        self.write_histogram(epoch, f"activations/{name}", s["act_counts"], s["act_edges"])
        scalars[f"{name}/mean"] = s["act_mean"]
        scalars[f"{name}/std"] = s["act_std"]
        for key in ("dead_fraction", "saturated_fraction"):
          if key in s:
            scalars[f"{name}/{key}"] = s[key]
      if "grad_counts" in s:
        self.write_histogram(epoch, f"gradients/{name}", s["grad_counts"], s["grad_edges"])
        scalars[f"grad_norm/{name}"] = s["grad_norm"]
    if scalars:
      self.write_scalars(epoch, scalars)

  def flush(self) -> None:
    self._metrics.flush()
    self._histograms.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Flushes and closes all files (idempotent)."""
    if self._metrics.closed:
      return
    self._metrics.close()
    self._histograms.close()
    if self._tb is not None:
      self._tb.close()

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def save_first_layer(workdir: str, kernel: Any, image_shape: Sequence[int] | None) -> str:
  """Saves the first layer's kernel (and the input image shape) for the first-layer figure.

  ``kernel``: a dense kernel ``(prod(image_shape), units)`` or a conv kernel
  ``(kh, kw, in_channels, out_channels)``; ``image_shape``: e.g. ``(8, 8, 1)``, or None for
  non-image data (then no weights figure is drawn). Returns the path of ``first_layer.npz``.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, FIRST_LAYER_FILE)
  shape = np.asarray(tuple(image_shape) if image_shape is not None else (), dtype=np.int64)
  np.savez(path, kernel=np.asarray(kernel, dtype=np.float32), image_shape=shape)
  return path


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  records = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue  # a line cut short by a kill mid-write; the rest of the file is still good
  return records


def read_metrics(workdir: str) -> list[dict]:
  """The records of ``<workdir>/metrics.jsonl`` in order ([] when absent)."""
  return _read_jsonl(os.path.join(workdir, METRICS_FILE))


def read_histograms(workdir: str) -> list[dict]:
  """The records of ``<workdir>/histograms.jsonl`` in order ([] when absent)."""
  return _read_jsonl(os.path.join(workdir, HISTOGRAMS_FILE))


def read_first_layer(workdir: str) -> tuple[np.ndarray, tuple[int, ...] | None] | None:
  """``(kernel, image_shape or None)`` from ``first_layer.npz``, or None when absent."""
  path = os.path.join(workdir, FIRST_LAYER_FILE)
  if not os.path.exists(path):
    return None
  with np.load(path) as data:
    kernel = data["kernel"]
    shape = tuple(int(s) for s in data["image_shape"])
  return kernel, (shape or None)


def is_finite_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


def epoch_records(records: Iterable[Mapping[str, Any]], key: str = "train_loss") -> list[dict]:
  """The records that carry ``key`` (e.g. the per-epoch records), in order."""
  return [dict(r) for r in records if key in r]
