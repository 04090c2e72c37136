"""research.monitor: babysitting a training run (the playbook's "babysitting the learning process").

Inside the jitted train step (pure, static shapes), every ``config.monitor.every_steps`` steps:

* :func:`update_ratios` — ``||update|| / ||param||`` per parameter leaf (want ~1e-3);
* :func:`layer_statistics` — per-layer activation histograms, mean/std, dead-ReLU or saturated
  fractions (from the models' sown ``intermediates`` ``act_{i}``), per-leaf gradient histograms
  and norms.

On the host:

* :class:`MetricsWriter` — TensorBoard events + ``metrics.jsonl`` + ``histograms.jsonl``
  (``write_scalars``, ``write_batch_losses``, ``write_update_ratios``, ``write_layer_statistics``,
  ``write_histogram``); :func:`save_first_layer` — ``first_layer.npz`` for the weights figure.
  The file layout and key names are documented in :mod:`research.monitor.writer`.
* :func:`make_figures` — all PNGs under ``<workdir>/figures`` from the workdir alone;
  :func:`first_layer_weights_figure`.
* :func:`verdict` / :func:`write_verdict` / :func:`ratio_advice` — the playbook's diagnoses.
* :class:`ProgressLine` — the per-epoch progress line.

The end of a training loop::

    save_first_layer(workdir, params['Dense_0']['kernel'], dataset.image_shape)
    writer.close()
    paths = make_figures(workdir)
    lines = write_verdict(workdir)      # <workdir>/verdict.txt
"""
from research.monitor.figures import first_layer_weights_figure
from research.monitor.figures import make_figures
from research.monitor.progress import ProgressLine
from research.monitor.stats import layer_statistics
from research.monitor.stats import update_ratios
from research.monitor.verdict import diagnose
from research.monitor.verdict import Diagnosis
from research.monitor.verdict import ratio_advice
from research.monitor.verdict import Thresholds
from research.monitor.verdict import verdict
from research.monitor.verdict import write_verdict
from research.monitor.writer import MetricsWriter
from research.monitor.writer import read_first_layer
from research.monitor.writer import read_histograms
from research.monitor.writer import read_metrics
from research.monitor.writer import save_first_layer

__all__ = [
    "Diagnosis", "MetricsWriter", "ProgressLine", "Thresholds", "diagnose",
    "first_layer_weights_figure", "layer_statistics", "make_figures", "ratio_advice",
    "read_first_layer", "read_histograms", "read_metrics", "save_first_layer", "update_ratios",
    "verdict", "write_verdict",
]
