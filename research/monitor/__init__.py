"""research.monitor: babysitting a training run (the playbook's "babysitting the learning process").

Inside the jitted train step (pure, static shapes), every ``config.monitor.every_steps`` steps:

* :func:`update_ratios` — ``||update|| / ||param||`` per parameter leaf (want ~1e-3);
* :func:`layer_statistics` — per-layer activation histograms (over each layer's robust data
  range), mean/std, dead-ReLU or saturated fractions (from the models' sown ``intermediates``
  ``act_{i}``), per-leaf gradient histograms and norms.

On the host:

* :class:`MetricsWriter` — TensorBoard events (x axis: the global step) + ``metrics.jsonl`` +
  ``histograms.jsonl`` (``write_scalars``, ``write_batch_losses``, ``write_sample``,
  ``write_config``, ``write_hparams``); :func:`save_first_layer` — ``first_layer.npz`` for the
  weights figure. The file layout and key names are documented in :mod:`research.monitor.writer`.
* :func:`make_figures` — all PNGs under ``<workdir>/figures`` from the workdir alone (never raises
  for an output problem); :func:`make_figures_async` — the same in a child process (a Future).
* :func:`verdict` / :func:`write_verdict` / :func:`ratio_advice` — the playbook's diagnoses.
* :class:`ProgressLine` — the per-epoch progress line.

The package reference (figures and how to read them, every verdict rule and its threshold,
TensorBoard tags) is research/monitor/README.md.

The end of a training loop::

    save_first_layer(workdir, params['Dense_0']['kernel'], dataset.image_shape)
    writer.write_hparams(flatten_config(config), {'best_val_accuracy': ...})
    writer.close()
    paths = make_figures(workdir)
    lines = write_verdict(workdir)      # <workdir>/verdict.txt

Importing this package is cheap (numpy only): jax (for the statistics) and matplotlib (for the
figures) are imported when those names are first used.
"""
from __future__ import annotations

import importlib
from typing import Any

from research.monitor.progress import ProgressLine
from research.monitor.verdict import diagnose
from research.monitor.verdict import Diagnosis
from research.monitor.verdict import ratio_advice
from research.monitor.verdict import Thresholds
from research.monitor.verdict import update_ratio_summary
from research.monitor.verdict import verdict
from research.monitor.verdict import write_verdict
from research.monitor.writer import flatten_config
from research.monitor.writer import MetricsWriter
from research.monitor.writer import read_first_layer
from research.monitor.writer import read_histograms
from research.monitor.writer import read_metrics
from research.monitor.writer import save_first_layer

# Names whose modules import jax or matplotlib, loaded on first use (PEP 562).
_LAZY = {
    "layer_statistics": "research.monitor.stats",
    "update_ratios": "research.monitor.stats",
    "make_figures": "research.monitor.figures",
    "make_figures_async": "research.monitor.figures",
    "first_layer_weights_figure": "research.monitor.figures",
}


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'research.monitor' has no attribute {name!r}")


__all__ = [
    "Diagnosis", "MetricsWriter", "ProgressLine", "Thresholds", "diagnose",
    "first_layer_weights_figure", "flatten_config", "layer_statistics", "make_figures",
    "make_figures_async", "ratio_advice", "read_first_layer", "read_histograms", "read_metrics",
    "save_first_layer", "update_ratio_summary", "update_ratios", "verdict", "write_verdict",
]
