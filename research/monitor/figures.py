"""Babysitting figures (matplotlib, Agg), redrawn from the workdir alone.

``make_figures(workdir)`` reads ``metrics.jsonl``, ``histograms.jsonl`` and ``first_layer.npz``
(written by ``research.monitor.writer``) and writes, under ``<workdir>/figures/``, each figure
whose data is present:

==============================  ==========================================================
``loss.png``                    training loss vs epoch (per batch faint, epoch mean bold), val loss
``loss_log.png``                the same with a log y axis
``accuracy.png``                train and validation accuracy with the gap shaded
``averages.png``                val accuracy and loss of raw, EMA and Polyak parameters (when kept)
``update_ratios.png``           ||update||/||w|| per leaf over time, log y, 1e-3 and its band
``activation_histograms.png``   per layer, a few snapshots over training; dead/saturated % in titles
``gradient_histograms.png``     per parameter leaf, the latest gradient histogram; norm in titles
``first_layer_weights.png``     first-layer weights as an image grid (image data only)
==============================  ==========================================================
"""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top
import matplotlib.ticker  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402

from research.monitor import records as records_lib  # noqa: E402
from research.monitor import verdict as verdict_lib  # noqa: E402
from research.monitor import writer as writer_lib  # noqa: E402

FIGURES_DIR = "figures"
DPI = 110
MAX_SNAPSHOTS = 4


def _save(fig: plt.Figure, path: str, tight_box: bool = True) -> str:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  # bbox_inches="tight" draws the figure twice; a figure with a layout engine is laid out already.
  tight = None if fig.get_layout_engine() is not None or tight_box is False else "tight"
  fig.savefig(path, dpi=DPI, bbox_inches=tight)
  plt.close(fig)
  return path


def loss_figure(metrics: list[dict], path: str, log: bool = False) -> str | None:
  """Training loss vs epoch: per-batch loss (faint), epoch mean (bold), validation loss."""
  batch_epochs, batch = records_lib.series(metrics, "batch_loss")
  epochs, train = records_lib.series(metrics, "train_loss")
  val_epochs, val = records_lib.series(metrics, "val_loss")
  if batch.size == 0 and train.size == 0:
    return None
  fig, ax = plt.subplots(figsize=(7, 4.2))
  if batch.size:
    ax.plot(batch_epochs, batch, color="tab:blue", alpha=0.25, lw=0.8, label="train (per batch)")
  if train.size:
    ax.plot(epochs, train, color="tab:blue", lw=2, marker="o", ms=3, label="train (epoch mean)")
  if val.size:
    ax.plot(val_epochs, val, color="tab:orange", lw=2, marker="o", ms=3, label="validation")
  if log:
    positive = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in (batch, train, val)])
    if positive.size:
      ax.set_yscale("log")
  ax.set_xlabel("epoch")
  ax.set_ylabel("loss (log scale)" if log else "loss")
  ax.set_title("Loss" + (" (log scale)" if log else ""))
  ax.grid(True, which="both", alpha=0.3)
  ax.legend()
  return _save(fig, path)


def accuracy_figure(metrics: list[dict], path: str) -> str | None:
  """Train and validation accuracy vs epoch, the gap between them shaded and annotated."""
  epochs, train = records_lib.series(metrics, "train_accuracy")
  val_epochs, val = records_lib.series(metrics, "val_accuracy")
  if train.size == 0 and val.size == 0:
    return None
  fig, ax = plt.subplots(figsize=(7, 4.2))
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
    ax.axvline(val_epochs[best], color="gray", ls=":", lw=1)
    title += f"   best val {100 * val[best]:.1f}% (epoch {val_epochs[best]:g})"
  ax.set_xlabel("epoch")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend(loc="lower right")
  return _save(fig, path)


def averages_figure(metrics: list[dict], path: str) -> str | None:
  """Validation accuracy and loss of the raw, EMA and Polyak parameters side by side (drawn only
  when the run kept an average: keys ``ema/val_accuracy``, ``polyak/val_accuracy``)."""
  names = [n for n in ("ema", "polyak") if records_lib.series(metrics, f"{n}/val_accuracy")[1].size]
  if not names:
    return None
  fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
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
    ax.grid(True, alpha=0.3)
    ax.legend()
  return _save(fig, path)


def update_ratio_figure(metrics: list[dict], path: str) -> str | None:
  """||update|| / ||param|| per leaf vs epoch on a log axis, with 1e-3 and the advice band."""
  keys = records_lib.keys_with_prefix(metrics, "update_ratio/")
  if not keys:
    return None
  low, high = verdict_lib.Thresholds().ratio_low, verdict_lib.Thresholds().ratio_high
  fig, ax = plt.subplots(figsize=(7.5, 4.5))
  ax.axhspan(low, high, color="tab:green", alpha=0.08, label=f"[{low:.0e}, {high:.0e}]")
  ax.axhline(verdict_lib.TARGET_UPDATE_RATIO, color="tab:green", ls="--", lw=1.2, label="1e-3")
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  kernels = [k for k in keys if k.endswith("kernel")]
  for i, key in enumerate(kernels or keys):
    epochs, values = records_lib.series(metrics, key)
    ok = np.isfinite(values) & (values > 0)
    ax.plot(epochs[ok], values[ok], color=colors[i % len(colors)], lw=1.5,
            label=key[len("update_ratio/"):])
  ax.set_yscale("log")
  ax.set_xlabel("epoch")
  ax.set_ylabel("||update|| / ||weights||")
  # Zero-initialized biases have huge ratios early on and would squash the axis: kernels only.
  ax.set_title("Update / weight ratio per layer" + (" (kernels; biases omitted)" if kernels and
                                                     len(kernels) < len(keys) else ""))
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8, loc="best")
  return _save(fig, path)


def _grid(n: int, max_cols: int = 4, size: tuple[float, float] = (4.0, 3.0)):
  cols = min(n, max_cols)
  rows = math.ceil(n / cols)
  # Fixed margins (inches -> fractions): layout engines / tight bboxes cost ~2x the drawing.
  width, height = size[0] * cols, size[1] * rows + 0.6
  fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
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


def activation_histogram_figure(metrics: list[dict], histograms: list[dict],
                                path: str) -> str | None:
  """Per layer, activation histograms at a few epochs; titles give the dead/saturated fraction."""
  layers = _by_tag(histograms, "activations/")
  if not layers:
    return None
  fig, axes = _grid(len(layers))
  cmap = plt.get_cmap("viridis")
  for ax, (layer, items) in zip(axes, layers.items()):
    chosen = _snapshots(items)
    for j, record in enumerate(chosen):
      counts = np.asarray(record["counts"], dtype=float)
      edges = np.asarray(record["edges"], dtype=float)
      fraction = counts / max(counts.sum(), 1.0)
      ax.stairs(fraction, edges, color=cmap(j / max(len(chosen) - 1, 1)), lw=1.5,
                label=f"epoch {record['epoch']:.3g}")
    title = layer
    for key, label in (("dead_fraction", "dead"), ("saturated_fraction", "saturated")):
      _, values = records_lib.series(metrics, f"{layer}/{key}")
      if values.size:
        title += f"   {label} {values[-1]:.0%}"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("activation")
    ax.set_ylabel("fraction of values")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle("Activation histograms per layer (edge bins include values outside the range)",
               fontsize=11, y=1 - 0.1 / fig.get_figheight())
  return _save(fig, path, tight_box=False)


def gradient_histogram_figure(metrics: list[dict], histograms: list[dict],
                              path: str) -> str | None:
  """Per parameter leaf, the latest gradient histogram (log counts); titles give ||grad||."""
  leaves = _by_tag(histograms, "gradients/")
  if not leaves:
    return None
  fig, axes = _grid(len(leaves))
  for ax, (leaf, items) in zip(axes, leaves.items()):
    record = items[-1]
    counts = np.asarray(record["counts"], dtype=float)
    edges = np.asarray(record["edges"], dtype=float)
    ax.stairs(counts, edges, fill=True, color="tab:purple", alpha=0.7)
    if np.any(counts > 0):
      ax.set_yscale("log")
      ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: readable, fast
    title = f"{leaf}  (epoch {record['epoch']:.3g})"
    _, norms = records_lib.series(metrics, f"grad_norm/{leaf}")
    if norms.size:
      title += f"\n||grad|| {norms[-1]:.2e}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("gradient value")
    ax.set_ylabel("count")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    ax.grid(True, alpha=0.3)
  fig.suptitle("Gradient histograms per parameter (latest sample)", fontsize=11,
               y=1 - 0.1 / fig.get_figheight())
  return _save(fig, path, tight_box=False)


def _tiles(kernel: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
  """(n, h, w, c) image tiles from a dense (prod(image_shape), units) or conv (kh, kw, c, n) kernel."""
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
  fig, ax = plt.subplots(figsize=(min(0.9 * cols + 0.5, 12), min(0.9 * rows + 0.8, 12)))
  if mosaic.shape[-1] == 3:
    ax.imshow(np.nan_to_num(mosaic, nan=1.0), interpolation="nearest")
  else:
    cmap = plt.get_cmap("gray").with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(mosaic[..., 0]), cmap=cmap, vmin=0, vmax=1,
              interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(f"First-layer weights ({n} of {all_tiles.shape[0]} units, each scaled to its own "
               "range)", fontsize=10)
  return _save(fig, path)


FIGURE_FILES = ("loss.png", "loss_log.png", "accuracy.png", "update_ratios.png",
                "activation_histograms.png", "gradient_histograms.png", "first_layer_weights.png")


def make_figures(workdir: str) -> list[str]:
  """Draws every figure whose data is in ``workdir``; returns the paths written (see module doc)."""
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    raise ValueError(f"workdir={workdir!r} is not a directory")
  metrics = writer_lib.read_metrics(workdir)
  histograms = writer_lib.read_histograms(workdir)
  out_dir = os.path.join(workdir, FIGURES_DIR)
  target = lambda name: os.path.join(out_dir, name)  # noqa: E731
  paths = [
      loss_figure(metrics, target("loss.png")),
      loss_figure(metrics, target("loss_log.png"), log=True),
      accuracy_figure(metrics, target("accuracy.png")),
      averages_figure(metrics, target("averages.png")),
      update_ratio_figure(metrics, target("update_ratios.png")),
      activation_histogram_figure(metrics, histograms, target("activation_histograms.png")),
      gradient_histogram_figure(metrics, histograms, target("gradient_histograms.png")),
  ]
  first = writer_lib.read_first_layer(workdir)
  if first is not None and first[1] is not None:
    paths.append(first_layer_weights_figure(first[0], first[1],
                                            target("first_layer_weights.png")))
  return [p for p in paths if p is not None]
