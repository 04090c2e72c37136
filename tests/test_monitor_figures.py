"""Figures of research.monitor: histogram ranges from the data, output problems that never stop a
run, drawing off the training thread, and an import that costs no matplotlib.pyplot."""
import logging
import os
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import monitor
from research.monitor import stats as stats_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_monitor import _synthetic_workdir


def _acts(h):
  return {"intermediates": {"act_0": (h,)}}


class ActivationRangeTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_relu_histogram_spans_the_data_not_a_fixed_0_to_5(self):
    # A dense layer whose activations reach ~20 (the digits CNN's): with a fixed [0, 5] every
    # value above 5 piled into the last bin, a false spike.
    h = jnp.linspace(0.0, 20.0, 4000).reshape(100, 40)
    stats = self.variant(lambda x: monitor.layer_statistics(_acts(x), {}, "relu", 10))(h)["act_0"]
    edges, counts = np.asarray(stats["act_edges"]), np.asarray(stats["act_counts"])
    assert edges[0] == 0.0 and 19.9 < edges[-1] <= 20.0
    assert counts.sum() == 4000
    np.testing.assert_allclose(counts, 400, atol=6)  # flat data, flat histogram: no end spike

  @chex.variants(with_jit=True, without_jit=True)
  def test_one_outlier_does_not_squash_the_rest(self):
    h = jnp.concatenate([jnp.linspace(0.0, 2.0, 3999), jnp.array([1000.0])]).reshape(100, 40)
    stats = self.variant(lambda x: monitor.layer_statistics(_acts(x), {}, "relu", 10))(h)["act_0"]
    edges, counts = np.asarray(stats["act_edges"]), np.asarray(stats["act_counts"])
    assert 1.99 < edges[-1] <= 2.01  # the 99.9% quantile of the data, 1000 left out
    assert counts[-1] <= 410  # ~400 + the few values above it, the outlier among them

  def test_tanh_range_stays_inside_minus_one_one_and_follows_the_data(self):
    h = jnp.linspace(0.1, 0.3, 1000).reshape(10, 100)
    stats = monitor.layer_statistics(_acts(h), {}, "tanh", 4)["act_0"]
    np.testing.assert_allclose(np.asarray(stats["act_edges"])[[0, -1]], [0.1, 0.3], atol=1e-3)
    wide = monitor.layer_statistics(_acts(jnp.array([[-1.0, 1.0, 0.0, 0.5]])), {}, "tanh", 4)
    assert list(np.asarray(wide["act_0"]["act_edges"])[[0, -1]]) == [-1.0, 1.0]

  def test_non_finite_activations_fall_back_to_the_activation_range(self):
    h = jnp.full((4, 3), jnp.nan)
    stats = jax.jit(lambda x: monitor.layer_statistics(_acts(x), {}, "relu", 5))(h)["act_0"]
    assert list(np.asarray(stats["act_edges"])[[0, -1]]) == [0.0, 5.0]
    assert float(stats["act_counts"].sum()) == 0.0

  def test_a_fixed_range_is_still_honoured(self):
    h = jnp.linspace(0.0, 20.0, 100).reshape(10, 10)
    stats = monitor.layer_statistics(_acts(h), {}, "relu", 5, value_range=(0.0, 5.0))["act_0"]
    assert list(np.asarray(stats["act_edges"])[[0, -1]]) == [0.0, 5.0]

  def test_robust_range_brackets_the_quantiles(self):
    values = np.random.default_rng(0).exponential(size=4096).astype(np.float32)
    lo, hi = jax.jit(lambda v: stats_lib.robust_range(v, (0.0, 1.0)))(values)
    ordered = np.sort(values)
    q_lo, q_hi = ordered[4], ordered[4091]  # the 5th smallest and 5th largest: 0.1% of 4096
    width = (q_hi - q_lo) / stats_lib.RANGE_BINS * 1.01  # the second pass's bins
    assert q_lo - width <= float(lo) <= q_lo
    assert q_hi <= float(hi) <= q_hi + width
    # NaN/Inf ignored, an outlier 1e4x away still resolved to the bulk.
    values = jnp.concatenate([jnp.arange(1000.0), jnp.array([jnp.nan, jnp.inf, -1e7])])
    lo, hi = stats_lib.robust_range(values, (0.0, 1.0))
    assert abs(float(lo)) < 20 and 990 < float(hi) < 1010


# ----------------------------------------------------------------------------- never stop a run


def test_figures_dir_is_a_file_one_warning_no_exception(tmp_path):
  workdir = _synthetic_workdir(tmp_path)
  (tmp_path / "figures").write_text("not a directory")
  warnings = []
  assert monitor.make_figures(workdir, warn=warnings.append) == []
  assert warnings == [f"figures not written: cannot create {tmp_path / 'figures'} (it is a file)"]


def test_one_figure_unwritable_the_others_are_written(tmp_path, caplog):
  workdir = _synthetic_workdir(tmp_path)
  (tmp_path / "figures" / "loss.png").mkdir(parents=True)  # a directory where the PNG goes
  with caplog.at_level(logging.WARNING, logger="research.monitor.figures"):
    paths = monitor.make_figures(workdir)
  assert len(caplog.records) == 1
  assert caplog.records[0].getMessage().startswith(
      f"figures: 1 not written under {tmp_path / 'figures'}: loss.png (IsADirectoryError")
  assert {os.path.basename(p) for p in paths} == {
      "loss_log.png", "accuracy.png", "update_ratios.png", "activation_histograms.png",
      "gradient_histograms.png", "first_layer_weights.png"}


def test_figures_of_a_diverged_run(tmp_path):
  with monitor.MetricsWriter(str(tmp_path), tensorboard=False) as writer:
    writer.write_batch_losses(0, [2.3, 1.5, 1.0])
    writer.write_scalars(1, {"train_loss": 1.6, "val_loss": 1.2, "train_accuracy": 0.5,
                             "val_accuracy": 0.6})
    writer.write_update_ratios(1.0, {"Dense_0/kernel": float("nan"), "Dense_0/bias": np.inf})
    writer.write_batch_losses(1, [9.0, float("inf"), float("nan")])
  warnings = []
  paths = monitor.make_figures(str(tmp_path), warn=warnings.append)
  assert warnings == []
  assert {os.path.basename(p) for p in paths} == {"loss.png", "loss_log.png", "accuracy.png",
                                                  "update_ratios.png"}


def test_make_figures_async_draws_in_a_child_process(tmp_path):
  workdir = _synthetic_workdir(tmp_path)
  start = time.perf_counter()
  future = monitor.make_figures_async(workdir)
  returned_after = time.perf_counter() - start
  paths = future.result(timeout=120)
  assert returned_after < 0.5  # the caller goes on at once
  assert {os.path.basename(p) for p in paths} == {
      "loss.png", "loss_log.png", "accuracy.png", "update_ratios.png",
      "activation_histograms.png", "gradient_histograms.png", "first_layer_weights.png"}
  assert all(os.path.getsize(p) > 5000 for p in paths)


def test_make_figures_async_reports_the_childs_warning(tmp_path):
  workdir = _synthetic_workdir(tmp_path)
  (tmp_path / "figures").write_text("")
  warnings = []
  assert monitor.make_figures_async(workdir, warn=warnings.append).result(timeout=120) == []
  assert warnings == [f"figures not written: cannot create {tmp_path / 'figures'} (it is a file)"]


def test_import_and_make_figures_never_import_pyplot(tmp_path):
  workdir = _synthetic_workdir(tmp_path)
  code = ("import sys\n"
          "import research.monitor as m\n"
          "heavy = lambda: sorted(x for x in ('matplotlib', 'matplotlib.pyplot', 'jax', 'torch')"
          " if x in sys.modules)\n"
          "print(heavy())\n"
          "m.make_figures(sys.argv[1])\n"
          "print(heavy())\n")
  out = subprocess.run([sys.executable, "-c", code, workdir], capture_output=True, text=True,
                       check=True)
  assert out.stdout.split("\n")[:2] == ["[]", "['matplotlib']"]


def test_make_figures_bad_workdir_is_still_an_error(tmp_path):
  with pytest.raises(ValueError, match="not a directory"):
    monitor.make_figures(str(tmp_path / "missing"))
