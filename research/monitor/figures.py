"""Babysitting figures (matplotlib, object API), redrawn from the workdir alone.

``make_figures(workdir)`` reads ``metrics.jsonl``, ``histograms.jsonl`` and ``first_layer.npz``
(written by ``research.monitor.writer``) and writes, under ``<workdir>/figures/``, each figure
whose data is present (how to read each: research/monitor/README.md):

==============================  ==========================================================
``loss.png``                    training loss vs epoch (per batch faint, epoch mean bold), val loss,
                                the epoch of the lowest val loss
``loss_log.png``                the same with a log y axis (late-training detail, overfitting)
``accuracy.png``                train and validation accuracy with the gap shaded, best epoch
``averages.png``                val accuracy and loss of raw, EMA and Polyak parameters (when kept)
``update_ratios.png``           ||update||/||w|| per weight (and bias) over time, log y, the 1e-3
                                target and the healthy band the verdict uses
``activation_histograms.png``   per layer, a few snapshots over training (each over the data's
                                robust range, as densities); dead/saturated % in titles
``gradient_histograms.png``     per parameter leaf, a few snapshots overlaid (change over time);
                                tiny leaves (< 64 values) as ||grad|| vs epoch instead
``first_layer_weights.png``     first-layer weights as an image grid (image data only)
==============================  ==========================================================

matplotlib is imported by the figure functions, not by ``import research.monitor`` (it costs
~0.5 s), and only its object API is used (``matplotlib.figure.Figure``, never ``pyplot``): no
global state, so figures can be drawn from any thread and the backend of a notebook is left alone.
A figure that cannot be drawn or written never stops a run: :func:`make_figures` logs one warning
line and returns what it wrote. :func:`make_figures_async` draws them in a child process, so a
training loop is not slowed by the drawing (nor by its hold on the GIL).
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import os
import subprocess
import sys
import threading
from typing import Any, Callable, Sequence

import numpy as np

from research.monitor import records as records_lib
from research.monitor.verdict import TARGET_UPDATE_RATIO
from research.monitor.verdict import Thresholds
from research.monitor.verdict import update_ratio_summary
from research.monitor import writer as writer_lib

FIGURES_DIR = "figures"
DPI = 110
MAX_SNAPSHOTS = 4
# Leaves with fewer values get ||grad|| over time instead of a histogram: 10 output biases make a
# histogram of a handful of spikes on a log axis, which says nothing.
MIN_HISTOGRAM_VALUES = 64

_log = logging.getLogger(__name__)


def _figure(figsize: tuple[float, float]):
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  return Figure(figsize=figsize)


def _save(fig, path: str, tight_box: bool = True) -> str:
  # bbox_inches="tight" draws the figure twice; a figure with a layout engine is laid out already.
  tight = None if fig.get_layout_engine() is not None or tight_box is False else "tight"
  fig.savefig(path, dpi=DPI, bbox_inches=tight)
  return path


def _integer_epochs(ax) -> None:
  """Whole-epoch ticks on the x axis (never 2.5)."""
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _colors() -> list[str]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  return matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]


def _time_colors(n: int) -> list:
  """``n`` colors from early (dark purple) to late (yellow)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  cmap = matplotlib.colormaps["viridis"]
  return [cmap(j / max(n - 1, 1)) for j in range(n)]


def _first_nonfinite(metrics: list[dict]) -> float | None:
  """The epoch of the first NaN/Inf training loss (batch or epoch), or None."""
  found = []
  for key in ("batch_loss", "train_loss"):
    epochs, values = records_lib.series(metrics, key)
    bad = epochs[~np.isfinite(values)]
    if bad.size:
      found.append(float(bad[0]))
  return min(found) if found else None


def loss_figure(metrics: list[dict], path: str, log: bool = False) -> str | None:
  """Training loss vs epoch: per-batch loss (faint), epoch mean (bold), validation loss, and a
  dotted line at the epoch of the lowest validation loss (where early stopping would stop)."""
  batch_epochs, batch = records_lib.series(metrics, "batch_loss")
  epochs, train = records_lib.series(metrics, "train_loss")
  val_epochs, val = records_lib.series(metrics, "val_loss")
  if batch.size == 0 and train.size == 0:
    return None
  fig = _figure((7, 4.2))
  ax = fig.subplots()
  if batch.size:
    ax.plot(batch_epochs, batch, color="tab:blue", alpha=0.25, lw=0.8, label="train (per batch)")
  if train.size:
    ax.plot(epochs, train, color="tab:blue", lw=2, marker="o", ms=3, label="train (epoch mean)")
  if val.size:
    ax.plot(val_epochs, val, color="tab:orange", lw=2, marker="o", ms=3, label="validation")
    if np.any(np.isfinite(val)):
      best = int(np.nanargmin(val))
      ax.axvline(val_epochs[best], color="tab:orange", ls=":", lw=1.2,
                 label=f"lowest validation loss (epoch {val_epochs[best]:g})")
  diverged = _first_nonfinite(metrics)
  if diverged is not None:
    in_epoch = math.floor(diverged - 1e-9) + 1  # batch i of epoch e sits at e - 1 + (i + 1) / n
    ax.axvline(diverged, color="tab:red", lw=1.5, label=f"loss NaN/Inf (in epoch {in_epoch})")
  if log:
    positive = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in (batch, train, val)])
    if positive.size:
      ax.set_yscale("log")
  ax.set_xlabel("epoch")
  ax.set_ylabel("loss (log scale)" if log else "loss")
  ax.set_title("Loss" + (" (log scale)" if log else ""))
  _integer_epochs(ax)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  return _save(fig, path)


def accuracy_figure(metrics: list[dict], path: str) -> str | None:
  """Train and validation accuracy vs epoch, the gap between them shaded and annotated."""
  epochs, train = records_lib.series(metrics, "train_accuracy")
  val_epochs, val = records_lib.series(metrics, "val_accuracy")
  if train.size == 0 and val.size == 0:
    return None
  fig = _figure((7, 4.2))
  ax = fig.subplots()
  if train.size:
    ax.plot(epochs, 100 * train, color="tab:blue", lw=2, marker="o", ms=3, label="train")
  if val.size:
    ax.plot(val_epochs, 100 * val, color="tab:orange", lw=2, marker="o", ms=3, label="validation")
  common = np.intersect1d(epochs, val_epochs)
  title = "Accuracy"
  if common.size:
    tr = np.array([train[epochs == e][0] for e in common])
    va = np.array([val[val_epochs == e][0] for e in common])
    ax.fill_between(common, 100 * va, 100 * tr, color="tab:red", alpha=0.15,
                    label="gap (train - val)")
    title += f"   final gap {100 * (tr[-1] - va[-1]):.1f} points"
  if val.size and np.any(np.isfinite(val)):
    best = int(np.nanargmax(val))
    ax.axvline(val_epochs[best], color="gray", ls=":", lw=1,
               label=f"best validation accuracy (epoch {val_epochs[best]:g})")
    title += f"   best val {100 * val[best]:.1f}%"
  ax.set_xlabel("epoch")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(title)
  _integer_epochs(ax)
  ax.grid(True, alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  return _save(fig, path)


def averages_figure(metrics: list[dict], path: str) -> str | None:
  """Validation accuracy and loss of the raw, EMA and Polyak parameters side by side (drawn only
  when the run kept an average: keys ``ema/val_accuracy``, ``polyak/val_accuracy``)."""
  names = [n for n in ("ema", "polyak") if records_lib.series(metrics, f"{n}/val_accuracy")[1].size]
  if not names:
    return None
  fig = _figure((11, 4.2))
  acc_ax, loss_ax = fig.subplots(1, 2)
  colors = {"raw": "tab:orange", "ema": "tab:green", "polyak": "tab:purple"}
  for name in ["raw"] + names:
    prefix = "" if name == "raw" else f"{name}/"
    epochs, acc = records_lib.series(metrics, f"{prefix}val_accuracy")
    loss_epochs, loss = records_lib.series(metrics, f"{prefix}val_loss")
    label = f"{name} (final {100 * acc[-1]:.1f}%)" if acc.size else name
    acc_ax.plot(epochs, 100 * acc, color=colors[name], lw=2, marker="o", ms=3, label=label)
    loss_ax.plot(loss_epochs, loss, color=colors[name], lw=2, marker="o", ms=3, label=name)
  acc_ax.set(xlabel="epoch", ylabel="validation accuracy (%)",
             title="Raw vs averaged parameters: accuracy")
  loss_ax.set(xlabel="epoch", ylabel="validation loss", title="... and loss")
  for ax in (acc_ax, loss_ax):
    _integer_epochs(ax)
    ax.grid(True, alpha=0.3)
    ax.legend()
  return _save(fig, path)


def _ratio_panel(ax, metrics: list[dict], keys: list[str], factor: float, title: str,
                 skip_epoch_zero: bool) -> None:
  target = TARGET_UPDATE_RATIO
  ax.axhspan(target / factor, target * factor, color="tab:green", alpha=0.08,
             label=f"healthy band ({target / factor:.0e} .. {target * factor:.0e})")
  ax.axhline(target, color="tab:green", ls="--", lw=1.2, label="target 1e-3")
  colors = _colors()
  for i, key in enumerate(keys):
    epochs, values = records_lib.series(metrics, key)
    ok = np.isfinite(values) & (values > 0)
    if skip_epoch_zero:
      ok &= epochs > 0
    ax.plot(epochs[ok], values[ok], color=colors[i % len(colors)], lw=1.5,
            label=key[len("update_ratio/"):])
  ax.set_yscale("log")
  ax.set_xlabel("epoch")
  ax.set_ylabel("||update|| / ||parameter||")
  ax.set_title(title, fontsize=10)
  _integer_epochs(ax)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7, loc="best")


def update_ratio_figure(metrics: list[dict], path: str) -> str | None:
  """||update|| / ||param|| per leaf vs epoch on a log axis, with the 1e-3 target and the healthy
  band of the verdict: weights on the left, biases (from their first update) on the right."""
  keys = records_lib.keys_with_prefix(metrics, "update_ratio/")
  if not keys:
    return None
  thresholds = Thresholds()
  summary = update_ratio_summary(metrics, thresholds)
  weights = [k for k in keys if summary.get(k[len("update_ratio/"):], {}).get("kind") == "weight"]
  biases = [k for k in keys if summary.get(k[len("update_ratio/"):], {}).get("kind") == "bias"]
  weights = weights or [k for k in keys if k not in biases]
  panels = [(weights, thresholds.ratio_factor, "weights", False)]
  if biases:
    panels.append((biases, thresholds.bias_ratio_factor, "biases, from their first update "
                   "(a zero bias has no ratio)", True))
  fig = _figure((7.5 * len(panels), 4.5))
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  for ax, (panel_keys, factor, what, skip_zero) in zip(axes, panels):
    _ratio_panel(ax, metrics, panel_keys, factor, f"Update / parameter ratio: {what}", skip_zero)
  fig.suptitle("The verdict judges the median weight: too low if below the band over the first "
               "quarter of the run, too high if above it over the whole run", fontsize=9)
  return _save(fig, path)


def _grid(n: int, max_cols: int = 4, size: tuple[float, float] = (4.0, 3.0)):
  cols = min(n, max_cols)
  rows = math.ceil(n / cols)
  # Fixed margins (inches -> fractions): layout engines / tight bboxes cost ~2x the drawing.
  width, height = size[0] * cols, size[1] * rows + 0.6
  fig = _figure((width, height))
  axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
  fig.subplots_adjust(left=0.7 / width, right=1 - 0.2 / width, bottom=0.55 / height,
                      top=1 - 0.75 / height, wspace=0.35, hspace=0.75)
  for ax in axes.ravel()[n:]:
    ax.set_visible(False)
  return fig, axes.ravel()


def _by_tag(histograms: list[dict], prefix: str) -> dict[str, list[dict]]:
  out: dict[str, dict[float, dict]] = {}
  for record in histograms:
    tag = record.get("tag", "")
    if tag.startswith(prefix):
      out.setdefault(tag[len(prefix):], {})[float(record["epoch"])] = record  # last write wins
  return {tag: [by_epoch[e] for e in sorted(by_epoch)] for tag, by_epoch in out.items()}


def _snapshots(items: list[dict], k: int = MAX_SNAPSHOTS) -> list[dict]:
  if len(items) <= k:
    return items
  return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


def _density(record: dict) -> tuple[np.ndarray, np.ndarray, float] | None:
  """``(density, edges, total)``: fraction of the values per unit of x, so snapshots with
  different ranges (each sample has its own) compare; None when empty or not finite."""
  counts = np.asarray(record["counts"], dtype=float)
  edges = np.asarray(record["edges"], dtype=float)
  total = counts.sum()
  widths = np.diff(edges)
  if total <= 0 or not np.all(np.isfinite(edges)) or np.any(widths <= 0):
    return None
  return counts / total / widths, edges, float(total)


def _epoch_label(epoch: float) -> str:
  return f"epoch {epoch:.1f}" if epoch != round(epoch) else f"epoch {epoch:g}"


def activation_histogram_figure(metrics: list[dict], histograms: list[dict],
                                path: str) -> str | None:
  """Per layer, activation histograms at a few epochs (early dark, late yellow) as densities over
  each sample's robust range; titles give the latest dead/saturated fraction."""
  layers = _by_tag(histograms, "activations/")
  if not layers:
    return None
  fig, axes = _grid(len(layers))
  for ax, (layer, items) in zip(axes, layers.items()):
    chosen = _snapshots(items)
    for color, record in zip(_time_colors(len(chosen)), chosen):
      drawn = _density(record)
      if drawn is not None:
        ax.stairs(drawn[0], drawn[1], color=color, lw=1.5, label=_epoch_label(record["epoch"]))
    title = layer
    for key, label in (("dead_fraction", "dead"), ("saturated_fraction", "saturated")):
      _, values = records_lib.series(metrics, f"{layer}/{key}")
      if values.size:
        title += f"   {label} {values[-1]:.0%}"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("activation")
    ax.set_ylabel("density (log)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle("Activation histograms per layer over training (each over its data's range; the "
               "0.1% tails fall in the end bins)", fontsize=11, y=1 - 0.1 / fig.get_figheight())
  return _save(fig, path, tight_box=False)


def _leaf_size(items: list[dict]) -> float:
  return max(float(np.sum(record["counts"])) for record in items)


def gradient_histogram_figure(metrics: list[dict], histograms: list[dict],
                              path: str) -> str | None:
  """Per parameter leaf, gradient histograms at a few epochs overlaid (early dark, late yellow;
  log density), so a shrinking or widening gradient shows; leaves of fewer than
  ``MIN_HISTOGRAM_VALUES`` values get their gradient norm over time instead."""
  leaves = _by_tag(histograms, "gradients/")
  if not leaves:
    return None
  fig, axes = _grid(len(leaves))
  from matplotlib.ticker import NullFormatter  # pylint: disable=g-import-not-at-top
  for ax, (leaf, items) in zip(axes, leaves.items()):
    norm_epochs, norms = records_lib.series(metrics, f"grad_norm/{leaf}")
    size = _leaf_size(items)
    if size < MIN_HISTOGRAM_VALUES:
      ok = np.isfinite(norms) & (norms > 0)
      ax.plot(norm_epochs[ok], norms[ok], color="tab:purple", lw=1.5)
      if ok.any():
        ax.set_yscale("log")
      ax.set_title(f"{leaf}  ({size:.0f} values: norm only)", fontsize=9)
      ax.set_xlabel("epoch")
      ax.set_ylabel("||grad||")
      _integer_epochs(ax)
      ax.grid(True, which="both", alpha=0.3)
      continue
    chosen = _snapshots(items)
    for color, record in zip(_time_colors(len(chosen)), chosen):
      drawn = _density(record)
      if drawn is not None:
        density = np.where(drawn[0] > 0, drawn[0], np.nan)  # empty bins: gaps on a log axis
        ax.stairs(density, drawn[1], color=color, lw=1.3, label=_epoch_label(record["epoch"]))
    ax.set_yscale("log")
    ax.yaxis.set_minor_formatter(NullFormatter())  # decades only: readable, fast
    title = leaf
    if norms.size:
      title += f"\n||grad|| {norms[0]:.1e} -> {norms[-1]:.1e}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("gradient value")
    ax.set_ylabel("density (log)")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)
  fig.suptitle("Gradient histograms per parameter over training (each over its own range)",
               fontsize=11, y=1 - 0.1 / fig.get_figheight())
  return _save(fig, path, tight_box=False)


def _tiles(kernel: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
  """(n, h, w, c) image tiles from a dense (prod(image_shape), units) or conv (kh, kw, c, n)
  kernel."""
  kernel = np.asarray(kernel, dtype=np.float32)
  image_shape = tuple(int(s) for s in image_shape)
  if len(image_shape) == 2:
    image_shape = image_shape + (1,)
  if len(image_shape) != 3:
    raise ValueError(f"image_shape must be (height, width[, channels]), got {image_shape}")
  if kernel.ndim == 2:
    if kernel.shape[0] != int(np.prod(image_shape)):
      raise ValueError(
          f"dense kernel of shape {kernel.shape} does not match image_shape={image_shape}: "
          f"need kernel.shape[0] == {int(np.prod(image_shape))}")
    return kernel.T.reshape((-1,) + image_shape)
  if kernel.ndim == 4:
    if kernel.shape[2] != image_shape[2]:
      raise ValueError(f"conv kernel of shape {kernel.shape} has {kernel.shape[2]} input "
                       f"channels but image_shape={image_shape} has {image_shape[2]}")
    return np.moveaxis(kernel, 3, 0)
  raise ValueError(f"kernel must be 2-D (dense) or 4-D (conv), got shape {kernel.shape}")


def _mosaic(tiles: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
  """One (rows*(h+pad), cols*(w+pad), c) image of the tiles, NaN between them (drawn as a gap)."""
  n, h, w, c = tiles.shape
  rows = math.ceil(n / cols)
  mosaic = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), np.nan, np.float32)
  for i, tile in enumerate(tiles):
    r, k = divmod(i, cols)
    mosaic[r * (h + pad):r * (h + pad) + h, k * (w + pad):k * (w + pad) + w] = tile
  return mosaic


def first_layer_weights_figure(kernel: Any, image_shape: Sequence[int], path: str,
                               max_tiles: int = 64) -> str:
  """First-layer weights as an image grid: one tile per unit/filter, each scaled to its own range.

  Smooth, structured tiles are a sign of a well-trained network; noisy tiles suggest too little
  training or too little regularization (CS231n "visualizing the weights"). Drawn as ONE image
  (a mosaic), which is ~20x faster than one axes per tile.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  all_tiles = _tiles(kernel, image_shape)
  tiles = all_tiles[:max_tiles].astype(np.float32)
  lo = tiles.min(axis=(1, 2, 3), keepdims=True)
  hi = tiles.max(axis=(1, 2, 3), keepdims=True)
  tiles = np.where(hi > lo, (tiles - lo) / np.where(hi > lo, hi - lo, 1.0), 0.5)
  if tiles.shape[-1] != 3:
    tiles = tiles.mean(axis=-1, keepdims=True)
  n = tiles.shape[0]
  cols = math.ceil(math.sqrt(n))
  mosaic = _mosaic(tiles, cols)
  rows = math.ceil(n / cols)
  fig = _figure((min(0.9 * cols + 0.5, 12), min(0.9 * rows + 0.8, 12)))
  ax = fig.subplots()
  if mosaic.shape[-1] == 3:
    ax.imshow(np.nan_to_num(mosaic, nan=1.0), interpolation="nearest")
  else:
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(mosaic[..., 0]), cmap=cmap, vmin=0, vmax=1,
              interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(f"First-layer weights ({n} of {all_tiles.shape[0]} units, each scaled to its own "
               "range)", fontsize=10)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return _save(fig, path)


FIGURE_FILES = ("loss.png", "loss_log.png", "accuracy.png", "averages.png", "update_ratios.png",
                "activation_histograms.png", "gradient_histograms.png", "first_layer_weights.png")


def make_figures(workdir: str, warn: Callable[[str], None] | None = None,
                 names: Sequence[str] | None = None, processes: int = 1) -> list[str]:
  """Draws every figure whose data is in ``workdir``; returns the paths written (see module doc).

  ``names``: only these files (e.g. ``["loss.png"]``; default all). ``processes > 1``: the
  figures are shared among this process and ``processes - 1`` children (drawing is CPU-bound
  Python holding the GIL: on 2 cores the end of a run draws in about half the time).

  Never raises for an output problem: a ``figures/`` that cannot be made or written (a file in
  its place, a read-only workdir, a full disk) or a figure that fails to draw costs ONE warning
  line (``warn``, default ``logging.warning``) naming what was skipped and why; the figures that
  could be written are returned. Raises ValueError only when ``workdir`` is not a directory.
  """
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    raise ValueError(f"workdir={workdir!r} is not a directory")
  warn = warn or _log.warning
  out_dir = os.path.join(workdir, FIGURES_DIR)
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as error:
    reason = "it is a file" if os.path.exists(out_dir) and not os.path.isdir(out_dir) else (
        error.strerror or repr(error))
    warn(f"figures not written: cannot create {out_dir} ({reason})")
    return []
  metrics = writer_lib.read_metrics(workdir)
  histograms = writer_lib.read_histograms(workdir)
  target = lambda name: os.path.join(out_dir, name)
  jobs = [
      ("loss.png", lambda p: loss_figure(metrics, p)),
      ("loss_log.png", lambda p: loss_figure(metrics, p, log=True)),
      ("accuracy.png", lambda p: accuracy_figure(metrics, p)),
      ("averages.png", lambda p: averages_figure(metrics, p)),
      ("update_ratios.png", lambda p: update_ratio_figure(metrics, p)),
      ("activation_histograms.png",
       lambda p: activation_histogram_figure(metrics, histograms, p)),
      ("gradient_histograms.png", lambda p: gradient_histogram_figure(metrics, histograms, p)),
  ]
  first = None
  try:
    first = writer_lib.read_first_layer(workdir)
  except (OSError, ValueError, KeyError) as error:
    jobs.append(("first_layer_weights.png", lambda p, e=error: _raise(e)))
  if first is not None and first[1] is not None:
    jobs.append(("first_layer_weights.png",
                 lambda p: first_layer_weights_figure(first[0], first[1], p)))
  if names is not None:
    jobs = [(name, draw) for name, draw in jobs if name in set(names)]
  children = []
  if processes > 1 and len(jobs) > 1:
    # Every other figure goes to a child (the jobs are ordered roughly by cost, so this splits
    # the work about evenly); this process draws the rest meanwhile.
    shares = [jobs[i::processes] for i in range(processes)]
    jobs = shares[0]
    children = [make_figures_async(workdir, warn, nice=0, names=[n for n, _ in share])
                for share in shares[1:] if share]
  paths, failed = [], []
  for name, draw in jobs:
    try:
      path = draw(target(name))
    except Exception as error:  # noqa: BLE001 - a figure must never stop a run
      # An output for people must never stop a run: note it, draw the rest.
      failed.append(f"{name} ({type(error).__name__}: {error})")
      continue
    if path is not None:
      paths.append(path)
  if failed:
    warn(f"figures: {len(failed)} not written under {out_dir}: " + "; ".join(failed))
  for child in children:
    paths.extend(child.result())
  return paths


def _raise(error: BaseException):
  raise error


def make_figures_async(workdir: str, warn: Callable[[str], None] | None = None,
                       nice: int = 10, names: Sequence[str] | None = None
                       ) -> concurrent.futures.Future:
  """Draws the figures of ``workdir`` in a child process; returns a Future of the paths written.

  For a training loop's periodic refresh: the loop goes on at once, and the drawing (~1-7 s,
  mostly holding the GIL in the Agg renderer) happens in another interpreter, at a lower CPU
  priority (``nice``). The child's warnings reach ``warn`` (default ``logging.warning``). The
  Future never raises for a figure problem; it resolves to [] when the child could not run.
  Keep one refresh at a time (``if pending is None or pending.done()``) and wait for it
  (``pending.result()``) before the final synchronous :func:`make_figures`, which writes the
  same files.
  """
  workdir = os.fspath(workdir)
  warn = warn or _log.warning
  future: concurrent.futures.Future = concurrent.futures.Future()
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  env = dict(os.environ)
  env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  command = [sys.executable, "-m", "research.monitor.figures", workdir, f"--nice={int(nice)}"]
  if names is not None:
    command.append("--names=" + ",".join(names))

  def run():
    try:
      done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
      for line in done.stderr.splitlines():
        if line.strip():
          warn(line)
      paths = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else []
      if done.returncode != 0:
        warn(f"figures: the drawing process exited with status {done.returncode}")
      future.set_result(paths)
    except Exception as error:  # noqa: BLE001 - the Future never raises for a figure problem
      warn(f"figures: could not draw in the background ({type(error).__name__}: {error})")
      future.set_result([])

  threading.Thread(target=run, name="make_figures_async", daemon=True).start()
  return future


def _main(argv: list[str]) -> int:
  """``python -m research.monitor.figures <workdir> [--nice=N] [--names=a.png,b.png]``: draws,
  prints the paths as one
  JSON line on stdout, warnings on stderr (what :func:`make_figures_async` runs)."""
  args = [a for a in argv if not a.startswith(("--nice=", "--names="))]
  nice = [int(a.split("=", 1)[1]) for a in argv if a.startswith("--nice=")]
  names = [a.split("=", 1)[1].split(",") for a in argv if a.startswith("--names=")]
  if len(args) != 1:
    print("usage: python -m research.monitor.figures <workdir> [--nice=N]", file=sys.stderr)
    return 2
  if nice and nice[-1] > 0 and hasattr(os, "nice"):
    try:
      os.nice(nice[-1])
    except OSError:
      pass  # not allowed: draw at the normal priority
  try:
    paths = make_figures(args[0], warn=lambda line: print(line, file=sys.stderr),
                         names=names[-1] if names else None)
  except ValueError as error:
    print(f"figures: {error}", file=sys.stderr)
    paths = []
  print(json.dumps(paths))
  return 0


if __name__ == "__main__":
  sys.exit(_main(sys.argv[1:]))
