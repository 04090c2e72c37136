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
``<workdir>/tensorboard/events.out.tfevents.*``
    TensorBoard events (encoded by :mod:`research.monitor.events`, no tensorboardX import). The
    x axis is the global step, ``round(epoch * steps_per_epoch)`` (pass ``steps_per_epoch`` to
    :class:`MetricsWriter`; without it the step is the epoch in milli-epochs). Tags: every
    metrics.jsonl key (``train_loss``, ``val_accuracy``, ``update_ratio/Dense_0/kernel``, ...),
    ``epoch`` (with each per-epoch record), ``batch_loss`` every ``tensorboard_loss_every`` steps,
    histograms ``activations/act_0`` and ``gradients/Dense_0/kernel``, the config as text
    (``config/text_summary``, :meth:`MetricsWriter.write_config`), and the hparams plugin's
    session with the final metrics as ``hparams/<name>`` (:meth:`MetricsWriter.write_hparams`).
"""
from __future__ import annotations

import concurrent.futures
import functools
import json
import math
import os
import re
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from research.launch.config_tree import flatten_config  # noqa: F401 - part of this API

from research.monitor import events as events_lib

METRICS_FILE = "metrics.jsonl"
HISTOGRAMS_FILE = "histograms.jsonl"
FIRST_LAYER_FILE = "first_layer.npz"
TENSORBOARD_DIR = "tensorboard"
STEPS_PER_EPOCH_IN_TENSORBOARD = 1000  # without steps_per_epoch: the step is in milli-epochs
TENSORBOARD_LOSS_EVERY = 10
HPARAMS_PREFIX = "hparams/"
FLUSH_SECONDS = 1.0


# The characters TensorBoard accepts in a tag (tensorboardX's rule: others become '_', leading
# slashes are dropped).
_INVALID_TAG_CHARACTERS = re.compile(r"[^-/\w\.]")


@functools.lru_cache(maxsize=4096)
def _tensorboard_tag(name: str) -> str:
  return _INVALID_TAG_CHARACTERS.sub("_", name).lstrip("/")


def _size(value: Any) -> int:
  size = getattr(value, "size", None)  # numpy / jax arrays, without a conversion
  return int(size) if isinstance(size, (int, np.integer)) else int(np.size(value))


def _to_float(name: str, value: Any) -> float:
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f"scalar {name!r} must have exactly one element, got shape {array.shape}")
  return float(array.reshape(()))


def _is_mapping(value: Any) -> bool:
  return isinstance(value, dict) or isinstance(value, Mapping)  # dict first: ABC checks are slow


def _flatten(scalars: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
  out = {}
  for key, value in scalars.items():
    name = f"{prefix}{key}"
    if _is_mapping(value):
      out.update(_flatten(value, name + "/"))
    else:
      out[name] = _to_float(name, value)
  return out


class MetricsWriter:
  """Writes scalars and histograms to TensorBoard and to JSON lines in ``workdir``.

  Usage::

    writer = MetricsWriter(workdir, steps_per_epoch=steps_per_epoch)
    writer.write_config(config)                              # once, at the start
    writer.write_sample(step / steps_per_epoch, ratios, stats)   # every N steps
    writer.write_batch_losses(epoch_index, losses)          # after each epoch
    writer.write_scalars(epoch_index + 1, {'train_loss': ..., 'val_accuracy': ...})
    writer.write_hparams(flatten_config(config), {'best_val_accuracy': ...})   # at the end
    writer.close()

  Values may be jax arrays straight out of the jitted step: with ``asynchronous=True`` (default)
  every write is queued to ONE background thread that fetches them (``np.asarray``, which waits
  for the device) and writes the files, so the training loop neither blocks on the device nor
  pays for serialization while the next steps run. Writes keep their order. ``flush()``/
  ``close()`` wait for the queue; an error in the background is raised by the next call.
  ``asynchronous=False`` writes in the caller's thread.

  Appends (never truncates), so a resumed run continues the same files.
  """

  def __init__(self, workdir: str, tensorboard: bool = True, asynchronous: bool = True,
               tensorboard_batch_losses: bool = False, steps_per_epoch: int | None = None,
               tensorboard_loss_every: int = TENSORBOARD_LOSS_EVERY):
    """Args:
      workdir: the run directory (created if missing).
      tensorboard: also write TensorBoard events under ``<workdir>/tensorboard``.
      asynchronous: write from one background thread (see the class docstring).
      tensorboard_batch_losses: send EVERY batch loss to TensorBoard (same as
        ``tensorboard_loss_every=1``); they are always all in metrics.jsonl and the loss figures.
      steps_per_epoch: updates per epoch, so the TensorBoard x axis is the global step
        (``round(epoch * steps_per_epoch)``); None: milli-epochs (``round(1000 * epoch)``).
      tensorboard_loss_every: send the batch loss of every N-th step to TensorBoard (0: none).
    """
    if steps_per_epoch is not None and int(steps_per_epoch) < 1:
      raise ValueError(f"steps_per_epoch must be a positive integer or None, got "
                       f"steps_per_epoch={steps_per_epoch!r}")
    if int(tensorboard_loss_every) < 0:
      raise ValueError(f"tensorboard_loss_every must be >= 0 (0: off), got "
                       f"tensorboard_loss_every={tensorboard_loss_every!r}")
    self.workdir = os.fspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    self.steps_per_epoch = (STEPS_PER_EPOCH_IN_TENSORBOARD if steps_per_epoch is None
                            else int(steps_per_epoch))
    self._loss_every = 1 if tensorboard_batch_losses else int(tensorboard_loss_every)
    self._metrics = open(os.path.join(self.workdir, METRICS_FILE), "a", encoding="utf-8")
    self._histograms = open(os.path.join(self.workdir, HISTOGRAMS_FILE), "a", encoding="utf-8")
    self._last_flush = time.monotonic()
    self._last_step = 0
    self._error: BaseException | None = None
    self._closed = False
    self._executor = (concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="MetricsWriter") if asynchronous else None)
    self._tb = (events_lib.EventFileWriter(os.path.join(self.workdir, TENSORBOARD_DIR))
                if tensorboard else None)

  # -- plumbing ---------------------------------------------------------------------------------

  def _step(self, epoch: float) -> int:
    return int(round(self.steps_per_epoch * float(epoch)))

  def _raise_pending(self) -> None:
    if self._error is not None:
      error, self._error = self._error, None
      raise RuntimeError(f"MetricsWriter failed in the background: {error!r}") from error

  def _submit(self, fn, *args) -> None:
    if self._closed:
      raise ValueError(f"MetricsWriter for {self.workdir!r} is closed")
    self._raise_pending()
    if self._executor is None:
      fn(*args)
      return

    def run():
      if self._error is None:
        try:
          fn(*args)
        except BaseException as error:  # noqa: BLE001 - re-raised on the caller's next call
          self._error = error
    self._executor.submit(run)

  def _wait(self) -> None:
    if self._executor is not None:
      self._executor.submit(lambda: None).result()

  def _maybe_flush(self, force: bool = False) -> None:
    # Flushing every line costs ~0.1 ms each; flush at most once a second (and on close), so a
    # killed run loses at most the last second of records.
    now = time.monotonic()
    if force or now - self._last_flush > FLUSH_SECONDS:
      self._metrics.flush()
      self._histograms.flush()
      if self._tb is not None:
        self._tb.flush()
      self._last_flush = now

  def _tb_write_step(self, values: list[bytes], step: int) -> None:
    """One TensorBoard event holding all ``values`` (one event per call rather than one per tag:
    each event costs a CRC and a record)."""
    if self._tb is not None and values:
      self._tb.write(events_lib.event(step, values))
      self._last_step = max(self._last_step, step)

  def _tb_write(self, values: list[bytes], epoch: float) -> None:
    self._tb_write_step(values, self._step(epoch))

  # The records below are encoded directly from values already on the host: the writer thread
  # shares the GIL with the training loop, so every microsecond of Python here delays the next
  # steps' dispatch (a monitored sample has ~20 scalars and ~8 histograms).

  def _scalar_record(self, epoch: float, scalars: Mapping[str, Any]) -> list[bytes]:
    flat = _flatten(scalars)
    self._metrics.write(json.dumps({"epoch": float(epoch), **flat}) + "\n")
    if self._tb is None:
      return []
    return [events_lib.scalar_value(_tensorboard_tag(name), value) for name, value in flat.items()]

  def _histogram_record(self, epoch: float, tag: str, counts: Any, edges: Any) -> list[bytes]:
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    edges = np.asarray(edges, dtype=np.float64).reshape(-1)
    record = {"epoch": float(epoch), "tag": tag, "counts": counts.tolist(),
              "edges": edges.tolist()}
    self._histograms.write(json.dumps(record) + "\n")
    if self._tb is None or not counts.sum() > 0:
      return []
    return [events_lib.histogram_value(_tensorboard_tag(tag), counts, edges)]

  @staticmethod
  def _check_scalars(scalars: Mapping[str, Any], prefix: str = "") -> None:
    """Caller-side checks (no device sync): names and sizes, so mistakes fail at the call site."""
    for key, value in scalars.items():
      if not prefix and key == "epoch":
        raise ValueError("scalars must not contain the key 'epoch' (it is the `epoch` argument)")
      if _is_mapping(value):
        MetricsWriter._check_scalars(value, f"{prefix}{key}/")
      elif _size(value) != 1:
        raise ValueError(f"scalar {prefix}{key!r} must have exactly one element, got shape "
                         f"{np.shape(value)}")

  @staticmethod
  def _check_histogram(tag: str, counts: Any, edges: Any) -> None:
    n_counts, n_edges = _size(counts), _size(edges)
    if n_edges != n_counts + 1:
      raise ValueError(f"histogram {tag!r}: need len(edges) == len(counts) + 1, got {n_edges} "
                       f"edges and {n_counts} counts")

  # -- public API -------------------------------------------------------------------------------

  def write_scalars(self, epoch: float, scalars: Mapping[str, Any]) -> None:
    """Appends ``{"epoch": epoch, **scalars}`` to metrics.jsonl and logs each scalar to TensorBoard
    at step ``round(epoch * steps_per_epoch)``, with the epoch itself as the scalar ``epoch``.

    Nested dicts are flattened with '/' (``{'update_ratio': {'Dense_0/kernel': r}}`` ->
    ``update_ratio/Dense_0/kernel``). Values may be Python/numpy/jax scalars.
    """
    self._write_scalars(epoch, scalars, with_epoch=True)

  def _write_scalars(self, epoch: float, scalars: Mapping[str, Any], with_epoch: bool) -> None:
    self._check_scalars(scalars)
    epoch = float(epoch)

    def write():
      values = self._scalar_record(epoch, scalars)
      if with_epoch and values:
        values.append(events_lib.scalar_value("epoch", epoch))
      self._tb_write(values, epoch)
      self._maybe_flush()
    self._submit(write)

  def write_batch_losses(self, epoch_index: int, losses: Any) -> None:
    """Writes one ``batch_loss`` record per batch of epoch ``epoch_index`` (0-based).

    ``losses``: a sequence or array of the epoch's per-batch losses. Batch ``i`` of ``n`` gets
    epoch ``epoch_index + (i + 1) / n``, so the per-batch curve and the epoch means (written at
    ``epoch_index + 1``) share the x-axis. TensorBoard gets the loss of every
    ``tensorboard_loss_every``-th global step (batch ``i`` is step ``epoch_index * n + i + 1``).
    """
    epoch_index = int(epoch_index)

    def write():
      values = np.asarray(jax_to_numpy(losses), dtype=np.float64).reshape(-1)
      n = len(values)
      for i, loss in enumerate(values):
        epoch = epoch_index + (i + 1) / n
        record = self._scalar_record(epoch, {"batch_loss": loss})
        if self._loss_every and (epoch_index * n + i + 1) % self._loss_every == 0:
          self._tb_write(record, epoch)
      self._maybe_flush()
    self._submit(write)

  def write_histogram(self, epoch: float, tag: str, counts: Any, edges: Any) -> None:
    """Writes one histogram (``len(edges) == len(counts) + 1``) to TensorBoard and
    histograms.jsonl."""
    self._check_histogram(tag, counts, edges)
    epoch = float(epoch)

    def write():
      self._tb_write(self._histogram_record(epoch, tag, counts, edges), epoch)
      self._maybe_flush()
    self._submit(write)

  def write_update_ratios(self, epoch: float, ratios: Mapping[str, Any]) -> None:
    """Writes the output of ``update_ratios`` as ``update_ratio/<leaf>`` scalars."""
    self._write_scalars(epoch, {f"update_ratio/{name}": value for name, value in ratios.items()},
                        with_epoch=False)

  def write_layer_statistics(self, epoch: float, stats: Mapping[str, Mapping[str, Any]]) -> None:
    """Writes the output of ``layer_statistics``: histograms plus summary scalars.

    Activation layers -> histogram ``activations/<layer>`` and scalars ``<layer>/mean``,
    ``<layer>/std``, ``<layer>/dead_fraction`` or ``<layer>/saturated_fraction``;
    gradient leaves -> histogram ``gradients/<leaf>`` and scalar ``grad_norm/<leaf>``.
    """
    for name, s in stats.items():
      if "act_counts" in s:
        self._check_histogram(f"activations/{name}", s["act_counts"], s["act_edges"])
      if "grad_counts" in s:
        self._check_histogram(f"gradients/{name}", s["grad_counts"], s["grad_edges"])
    epoch = float(epoch)

    def write():
      host = jax_to_numpy(stats)
      values, scalars = [], {}
      for name, s in host.items():
        if "act_counts" in s:
          values += self._histogram_record(epoch, f"activations/{name}", s["act_counts"],
                                           s["act_edges"])
          scalars[f"{name}/mean"] = s["act_mean"]
          scalars[f"{name}/std"] = s["act_std"]
          for key in ("dead_fraction", "saturated_fraction"):
            if key in s:
              scalars[f"{name}/{key}"] = s[key]
        if "grad_counts" in s:
          values += self._histogram_record(epoch, f"gradients/{name}", s["grad_counts"],
                                           s["grad_edges"])
          scalars[f"grad_norm/{name}"] = s["grad_norm"]
      if scalars:
        values += self._scalar_record(epoch, scalars)
      self._tb_write(values, epoch)
      self._maybe_flush()
    self._submit(write)

  def write_sample(self, epoch: float, ratios: Mapping[str, Any] | None = None,
                   stats: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """``write_update_ratios`` + ``write_layer_statistics`` for one monitored step (either may
    be None). Pass the jax arrays as they come out of the step: the fetch happens off-thread."""
    if ratios is not None:
      self.write_update_ratios(epoch, ratios)
    if stats is not None:
      self.write_layer_statistics(epoch, stats)

  def write_text(self, tag: str, markdown: str) -> None:
    """A TensorBoard text summary (tag ``<tag>/text_summary``, rendered as markdown in the Text
    tab) at the latest step written. Not in the JSON files."""
    tag, markdown = str(tag), str(markdown)

    def write():
      if self._tb is not None:
        self._tb_write_step([events_lib.text_value(f"{_tensorboard_tag(tag)}/text_summary",
                                                   markdown)], self._last_step)
        self._maybe_flush()
    self._submit(write)

  def write_config(self, config: Any) -> None:
    """The run's config as TensorBoard text (``config/text_summary``), shown verbatim.

    ``config``: an ``ml_collections.ConfigDict`` (its JSON), a mapping (JSON) or a string.
    """
    if isinstance(config, str):
      text = config
    elif hasattr(config, "to_json_best_effort"):
      text = config.to_json_best_effort(indent=2, sort_keys=True)
    else:
      text = json.dumps(config, indent=2, sort_keys=True, default=str)
    # Indented by 4 spaces: a markdown code block, so TensorBoard keeps the lines and spacing.
    self.write_text("config", "\n".join("    " + line for line in text.splitlines()))

  def write_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, Any],
                    status: str = "success") -> None:
    """Hyperparameters and final metrics for TensorBoard's HPARAMS tab, where runs compare.

    ``hparams``: flat ``{name: value}`` (see :func:`flatten_config`); numbers, strings and bools
    are kept, sequences become ``"256,256"``, None is left out. ``metrics``: ``{name: value}``,
    written as scalars ``hparams/<name>`` at the latest step (their own tags, so they do not mix
    with the per-epoch curves) and listed as the table's metric columns. ``status``: success |
    failure | running | unknown (a diverged run: failure). Call once, at the end of the run.
    """
    flat_metrics = _flatten(metrics)
    hparams = dict(hparams)
    for name, value in hparams.items():
      if isinstance(value, np.generic):
        hparams[name] = value.item()
      elif value is not None and not isinstance(value, (str, bool, int, float, list, tuple)):
        hparams[name] = str(value)
    if status not in events_lib.STATUS:
      raise ValueError(f"status={status!r} is not known; known: {list(events_lib.STATUS)}")
    start_time = time.time()

    def write():
      if self._tb is None:
        return
      tags = [_tensorboard_tag(HPARAMS_PREFIX + name) for name in flat_metrics]
      session = events_lib.hparams_values(hparams, tags, start_time=start_time, status=status,
                                          end_time=time.time())
      scalars = [events_lib.scalar_value(tag, value)
                 for tag, value in zip(tags, flat_metrics.values())]
      step = self._last_step
      for value in session:  # one event each, as the hparams plugin expects
        self._tb_write_step([value], step)
      self._tb_write_step(scalars, step)
      self._maybe_flush()
    self._submit(write)

  def flush(self) -> None:
    """Waits for queued writes, then flushes the JSON lines and TensorBoard events to disk."""
    self._wait()
    self._raise_pending()
    self._maybe_flush(force=True)

  def close(self) -> None:
    """Waits for queued writes, flushes and closes all files (idempotent)."""
    if self._closed:
      return
    self._closed = True
    try:
      self._wait()
    finally:
      if self._executor is not None:
        self._executor.shutdown(wait=True)
      self._maybe_flush(force=True)
      self._metrics.close()
      self._histograms.close()
      if self._tb is not None:
        self._tb.close()
    self._raise_pending()

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def jax_to_numpy(tree: Any) -> Any:
  """Host copies of every array leaf (waits for the device); dicts/lists keep their structure."""
  if _is_mapping(tree):
    return {k: jax_to_numpy(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return np.asarray([np.asarray(v) for v in tree]) if tree and not isinstance(
        tree[0], Mapping) else type(tree)(jax_to_numpy(v) for v in tree)
  return np.asarray(tree)


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
