"""Tests of research.monitor: jittable statistics, the writer, figures, progress line."""
import json
import math
import os
import struct

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import monitor
from research.monitor import records as records_lib
from research.monitor import stats as stats_lib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == PNG_MAGIC, f"{path} is not a PNG"
  return struct.unpack(">II", head[16:24])


# ----------------------------------------------------------------------------- statistics


class UpdateRatiosTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_ratio_per_leaf_with_path_names(self):
    params = {"Dense_0": {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.array([3.0, 4.0])}}
    updates = {"Dense_0": {"kernel": jnp.full((2, 2), 0.003), "bias": jnp.array([0.0, 0.05])}}
    ratios = self.variant(monitor.update_ratios)(updates, params)
    assert set(ratios) == {"Dense_0/kernel", "Dense_0/bias"}
    chex.assert_trees_all_close(ratios["Dense_0/kernel"], 1e-3, rtol=1e-5)
    chex.assert_trees_all_close(ratios["Dense_0/bias"], 0.05 / 5.0, rtol=1e-5)

  def test_mismatched_trees_name_the_leaves(self):
    with pytest.raises(ValueError, match="same leaves"):
      monitor.update_ratios({"a": jnp.ones(2)}, {"b": jnp.ones(2)})


class HistogramTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_counts_match_numpy_and_clip_outliers(self):
    values = jnp.array([-3.0, 0.0, 0.1, 0.49, 0.5, 0.99, 1.0, 7.0, jnp.nan])
    counts = self.variant(lambda v: stats_lib.histogram(v, 4, (0.0, 1.0)))(values)
    # Bins [0,.25) [.25,.5) [.5,.75) [.75,1]; -3 -> first, 1.0 and 7 -> last; NaN dropped.
    chex.assert_trees_all_close(counts, jnp.array([3.0, 1.0, 1.0, 3.0]))
    inside = np.asarray(values[1:7])
    chex.assert_trees_all_close(
        stats_lib.histogram(inside, 4, (0.0, 1.0)),
        np.histogram(inside, bins=4, range=(0.0, 1.0))[0].astype(np.float32))

  def test_bad_bins(self):
    with pytest.raises(ValueError, match="bins"):
      stats_lib.histogram(jnp.ones(3), 0, (0.0, 1.0))


def _intermediates(acts):
  return {"intermediates": {f"act_{i}": (a,) for i, a in enumerate(acts)}}


class LayerStatisticsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_relu_dead_fraction_and_shapes(self):
    h0 = jnp.array([[0.0, 1.0, 0.0, 2.0], [0.0, 0.5, 0.0, 0.0]])  # units 0 and 2 dead
    h1 = jnp.array([[1.0, 1.0], [1.0, 1.0]])
    grads = {"Dense_0": {"kernel": jnp.array([[1.0, -2.0], [0.5, 0.0]])}}
    fn = self.variant(lambda i, g: monitor.layer_statistics(i, g, "relu", 10))
    stats = fn(_intermediates([h0, h1]), grads)
    assert set(stats) == {"act_0", "act_1", "Dense_0/kernel"}
    chex.assert_trees_all_close(stats["act_0"]["dead_fraction"], 0.5)
    chex.assert_trees_all_close(stats["act_1"]["dead_fraction"], 0.0)
    chex.assert_shape(stats["act_0"]["act_counts"], (10,))
    chex.assert_shape(stats["act_0"]["act_edges"], (11,))
    chex.assert_trees_all_close(stats["act_0"]["act_counts"].sum(), 8.0)
    chex.assert_trees_all_close(stats["act_0"]["act_mean"], jnp.mean(h0))
    g = stats["Dense_0/kernel"]
    chex.assert_shape(g["grad_counts"], (10,))
    chex.assert_trees_all_close(g["grad_edges"][jnp.array([0, -1])], jnp.array([-2.0, 2.0]))
    chex.assert_trees_all_close(g["grad_norm"], math.sqrt(1 + 4 + 0.25), rtol=1e-6)
    chex.assert_trees_all_close(g["grad_counts"].sum(), 4.0)

  def test_tanh_and_sigmoid_saturation(self):
    h = jnp.array([[0.999, -0.995, 0.2, 0.0]])
    s = monitor.layer_statistics(_intermediates([h]), {}, "tanh", 5)
    chex.assert_trees_all_close(s["act_0"]["saturated_fraction"], 0.5)
    assert "dead_fraction" not in s["act_0"]
    sig = jnp.array([[0.001, 0.5, 0.995, 0.7]])
    s = monitor.layer_statistics(_intermediates([sig]), {}, "sigmoid", 5)
    chex.assert_trees_all_close(s["act_0"]["saturated_fraction"], 0.5)

  def test_conv_maps_dead_per_channel(self):
    h = jnp.zeros((2, 3, 3, 4)).at[1, 2, 2, 1].set(1.0)  # only channel 1 ever fires
    s = monitor.layer_statistics(_intermediates([h]), {}, "relu", 5)
    chex.assert_trees_all_close(s["act_0"]["dead_fraction"], 0.75)

  def test_unknown_activation_lists_known(self):
    with pytest.raises(ValueError, match="relu"):
      monitor.layer_statistics(_intermediates([jnp.ones((1, 2))]), {}, "gelu", 5)

  def test_flax_model_sow(self):
    import flax.linen as nn

    class Tiny(nn.Module):
      @nn.compact
      def __call__(self, x):
        for i in range(2):
          x = nn.relu(nn.Dense(3)(x))
          self.sow("intermediates", f"act_{i}", x)
        return nn.Dense(2)(x)

    model = Tiny()
    x = jnp.ones((4, 5), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    _, mutated = model.apply(variables, x, mutable=["intermediates"])
    grads = jax.tree_util.tree_map(jnp.ones_like, variables["params"])
    stats = jax.jit(lambda m, g: monitor.layer_statistics(m, g, "relu", 8))(mutated, grads)
    assert {k for k in stats if k.startswith("act_")} == {"act_0", "act_1"}
    assert "Dense_2/kernel" in stats


# ----------------------------------------------------------------------------- writer


def _read_events(path):
  """Parses a TFRecord event file (8-byte length, 4-byte crc, payload, 4-byte crc)."""
  from tensorboardX.proto import event_pb2
  events = []
  with open(path, "rb") as f:
    data = f.read()
  offset = 0
  while offset < len(data):
    (length,) = struct.unpack("<Q", data[offset:offset + 8])
    payload = data[offset + 12:offset + 12 + length]
    events.append(event_pb2.Event.FromString(payload))
    offset += 12 + length + 4
  return events


@pytest.mark.parametrize("asynchronous", [True, False])
def test_writer_jsonl_tensorboard_and_histograms(tmp_path, asynchronous):
  with monitor.MetricsWriter(str(tmp_path), asynchronous=asynchronous,
                             tensorboard_batch_losses=True) as writer:
    writer.write_scalars(1, {"train_loss": np.float32(0.5), "val": {"accuracy": jnp.array(0.9)}})
    writer.write_batch_losses(0, jnp.array([2.0, 1.0]))
    writer.write_update_ratios(0.5, {"Dense_0/kernel": 1e-3})
    writer.write_histogram(0.5, "activations/act_0", [1, 2], [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="len\\(edges\\)"):
      writer.write_histogram(0.5, "bad", [1, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="'epoch'"):
      writer.write_scalars(1, {"epoch": 3})
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line) for line in lines] == [
      {"epoch": 1.0, "train_loss": 0.5, "val/accuracy": pytest.approx(0.9)},
      {"epoch": 0.5, "batch_loss": 2.0},
      {"epoch": 1.0, "batch_loss": 1.0},
      {"epoch": 0.5, "update_ratio/Dense_0/kernel": 1e-3},
  ]
  hist = monitor.read_histograms(str(tmp_path))
  assert hist == [{"epoch": 0.5, "tag": "activations/act_0", "counts": [1.0, 2.0],
                   "edges": [0.0, 0.5, 1.0]}]
  events = os.listdir(tmp_path / "tensorboard")
  assert len(events) == 1 and events[0].startswith("events.out.tfevents")
  events = _read_events(str(tmp_path / "tensorboard" / events[0]))
  scalars = [(v.tag, e.step, v.simple_value) for e in events for v in e.summary.value
             if v.HasField("simple_value")]
  assert ("train_loss", 1000, 0.5) in scalars
  assert ("epoch", 1000, 1.0) in scalars  # with each write_scalars, not with the samples
  assert [step for tag, step, _ in scalars if tag == "epoch"] == [1000]
  assert [(step, value) for tag, step, value in scalars if tag == "batch_loss"] == [
      (500, 2.0), (1000, 1.0)]
  histos = [(v.tag, e.step, list(v.histo.bucket)) for e in events for v in e.summary.value
            if v.HasField("histo")]
  assert histos == [("activations/act_0", 500, [1.0, 2.0])]


def test_writer_builds_the_same_tensorboard_values_as_tensorboardx_summaries(tmp_path):
  """The writer encodes its records itself (research.monitor.events: importing tensorboardX costs
  +2.2 s, it imports torch); what reaches TensorBoard must be what tensorboardX's summary helpers
  would have produced, tag cleaning included."""
  from tensorboardX import summary  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import summary_pb2  # pylint: disable=g-import-not-at-top
  parse = summary_pb2.Summary.Value.FromString
  writer = monitor.MetricsWriter(str(tmp_path), asynchronous=False)
  scalars = {"update_ratio/Dense_0/kernel": 1e-3, "/lead/slash": 2.0, "odd name:(x)": 3.5,
             "act_0/dead_fraction": np.float32(0.25), "zero": 0.0}
  ours = [parse(v) for v in writer._scalar_record(1.0, scalars)]  # pylint: disable=protected-access
  theirs = [v for name, value in scalars.items() for v in summary.scalar(name, value).value]
  assert [v.tag for v in ours] == ["update_ratio/Dense_0/kernel", "lead/slash", "odd_name__x_",
                                   "act_0/dead_fraction", "zero"]
  assert ours == theirs
  counts, edges = np.array([0.0, 3.0, 1.0], np.float32), np.array([-1.0, -0.2, 0.4, 1.0])
  record = writer._histogram_record(1.0, "gradients/Dense_0/kernel", counts, edges)  # pylint: disable=protected-access
  ours = [parse(v) for v in record]
  centers = 0.5 * (edges[:-1] + edges[1:])
  theirs = list(summary.histogram_raw(
      "gradients/Dense_0/kernel", min=-1.0, max=1.0, num=4.0, sum=float(counts @ centers),
      sum_squares=float(counts @ centers**2), bucket_limits=edges[1:].tolist(),
      bucket_counts=counts.tolist()).value)
  assert ours == theirs
  assert writer._histogram_record(1.0, "empty", np.zeros(2), edges[:3]) == []  # pylint: disable=protected-access
  writer.close()


def test_writer_sends_every_nth_batch_loss_to_tensorboard(tmp_path):
  """All batch losses go to metrics.jsonl; TensorBoard gets the loss of every
  ``tensorboard_loss_every``-th global step (default 10), at that step."""
  with monitor.MetricsWriter(str(tmp_path), steps_per_epoch=4, tensorboard_loss_every=3) as writer:
    writer.write_batch_losses(0, [4.0, 3.0, 2.0, 1.0])
    writer.write_batch_losses(1, [0.9, 0.8, 0.7, 0.6])
    writer.write_scalars(2, {"train_loss": 1.5})
  (event_file,) = os.listdir(tmp_path / "tensorboard")
  events = _read_events(str(tmp_path / "tensorboard" / event_file))
  losses = [(e.step, v.simple_value) for e in events for v in e.summary.value
            if v.tag == "batch_loss"]
  assert losses == [(3, 2.0), (6, pytest.approx(0.8))]
  assert len(monitor.read_metrics(str(tmp_path))) == 9
  with monitor.MetricsWriter(str(tmp_path / "off"), tensorboard_loss_every=0) as writer:
    writer.write_batch_losses(0, [2.0, 1.0])
  (event_file,) = os.listdir(tmp_path / "off" / "tensorboard")
  assert not [v for e in _read_events(str(tmp_path / "off" / "tensorboard" / event_file))
              for v in e.summary.value]


def test_writer_background_error_is_raised_and_closed_writer_refuses(tmp_path):
  writer = monitor.MetricsWriter(str(tmp_path), tensorboard=False)
  writer.write_scalars(1, {"bad": "not a number"})
  with pytest.raises(RuntimeError, match="background"):
    writer.flush()
  writer.close()
  with pytest.raises(ValueError, match="closed"):
    writer.write_scalars(2, {"x": 1.0})


def test_writer_rejects_non_scalars_at_the_call(tmp_path):
  with monitor.MetricsWriter(str(tmp_path), tensorboard=False) as writer:
    with pytest.raises(ValueError, match="exactly one element"):
      writer.write_scalars(1, {"x": np.ones(3)})


def test_series_last_write_wins_for_resumed_epochs():
  recs = [{"epoch": 1, "train_loss": 3.0}, {"epoch": 2, "train_loss": 2.0},
          {"epoch": 2, "train_loss": 1.5}, {"epoch": 3, "train_loss": 1.0}]
  epochs, values = records_lib.series(recs, "train_loss")
  np.testing.assert_array_equal(epochs, [1, 2, 3])
  np.testing.assert_array_equal(values, [3.0, 1.5, 1.0])


# ----------------------------------------------------------------------------- figures

EXPECTED_FIGURES = {"loss.png", "loss_log.png", "accuracy.png", "update_ratios.png",
                    "activation_histograms.png", "gradient_histograms.png",
                    "first_layer_weights.png"}


def _synthetic_workdir(path, image=True, epochs=6, batches=5):
  rng = np.random.default_rng(0)
  with monitor.MetricsWriter(str(path), tensorboard=False) as writer:
    for e in range(epochs):
      losses = 2.3 * np.exp(-0.4 * (e + np.arange(batches) / batches)) + 0.05 * rng.random(batches)
      writer.write_batch_losses(e, losses)
      for b in range(0, batches, 2):
        t = e + (b + 1) / batches
        writer.write_update_ratios(t, {"Dense_0/kernel": 1e-3 * (1 + 0.1 * e),
                                       "Dense_0/bias": 0.5, "Dense_1/kernel": 2e-3})
        stats = {
            "act_0": {"act_counts": rng.integers(0, 9, 10), "act_edges": np.linspace(0, 5, 11),
                      "act_mean": 1.0, "act_std": 0.5, "dead_fraction": 0.1},
            "Dense_0/kernel": {"grad_counts": rng.integers(0, 9, 10),
                               "grad_edges": np.linspace(-0.1, 0.1, 11), "grad_norm": 0.3},
        }
        writer.write_layer_statistics(t, stats)
      writer.write_scalars(e + 1, {"train_loss": float(losses.mean()),
                                   "train_accuracy": 0.5 + 0.08 * e,
                                   "val_loss": float(losses.mean()) + 0.1,
                                   "val_accuracy": 0.48 + 0.07 * e, "learning_rate": 1e-3})
  if image:
    monitor.save_first_layer(str(path), rng.normal(size=(64, 12)), (8, 8, 1))
  return str(path)


def test_make_figures_exact_set_valid_pngs(tmp_path):
  workdir = _synthetic_workdir(tmp_path)
  paths = monitor.make_figures(workdir)
  assert {os.path.basename(p) for p in paths} == EXPECTED_FIGURES
  assert set(os.listdir(tmp_path / "figures")) == EXPECTED_FIGURES
  for p in paths:
    width, height = _png_size(p)
    assert 300 <= width <= 4000 and 200 <= height <= 4000, (p, width, height)
    assert os.path.getsize(p) > 5000


def test_make_figures_only_what_the_data_supports(tmp_path):
  with monitor.MetricsWriter(str(tmp_path), tensorboard=False) as writer:
    writer.write_scalars(1, {"train_loss": 2.0, "train_accuracy": 0.3})
    writer.write_scalars(2, {"train_loss": 1.0, "train_accuracy": 0.6})
  monitor.save_first_layer(str(tmp_path), np.ones((64, 3)), None)  # not an image: no figure
  paths = monitor.make_figures(str(tmp_path))
  assert {os.path.basename(p) for p in paths} == {"loss.png", "loss_log.png", "accuracy.png"}


def test_make_figures_bad_workdir(tmp_path):
  with pytest.raises(ValueError, match="not a directory"):
    monitor.make_figures(str(tmp_path / "missing"))


@pytest.mark.parametrize("kernel_shape,image_shape", [((64, 20), (8, 8, 1)),
                                                      ((3, 3, 1, 8), (8, 8, 1)),
                                                      ((5, 5, 3, 6), (32, 32, 3))])
def test_first_layer_weights_figure(tmp_path, kernel_shape, image_shape):
  path = monitor.first_layer_weights_figure(np.random.default_rng(0).normal(size=kernel_shape),
                                            image_shape, str(tmp_path / "w.png"))
  width, height = _png_size(path)
  assert width > 150 and height > 150


def test_first_layer_weights_shape_mismatch(tmp_path):
  with pytest.raises(ValueError, match="image_shape"):
    monitor.first_layer_weights_figure(np.ones((50, 4)), (8, 8, 1), str(tmp_path / "w.png"))


# ----------------------------------------------------------------------------- progress


def test_progress_line_eta():
  now = [100.0]
  line = monitor.ProgressLine(num_epochs=4, clock=lambda: now[0])
  now[0] = 102.0
  text = line(0, {"train_loss": 0.31, "train_accuracy": 0.9125, "val_loss": 0.35,
                  "val_accuracy": 0.9, "learning_rate": 1e-3, "update_ratio/x": 1.0})
  assert text == ("epoch 1/4  train_loss 0.3100  train_acc 91.25%  val_loss 0.3500  "
                  "val_acc 90.00%  lr 1.00e-03  time 2.0s  eta 6.0s")
  now[0] = 200.0
  assert line(3, {"train_loss": float("nan")}).endswith("train_loss nan  time 1m40s  eta 0.0s")


def test_progress_eta_leaves_the_first_epochs_compilation_out():
  """The first epoch took 10 s (compilation), the next ones 1 s: from the second epoch on the
  ETA is 1 s per remaining epoch, not the mean including the compile."""
  now = [0.0]
  line = monitor.ProgressLine(num_epochs=10, clock=lambda: now[0])
  now[0] = 10.0
  assert line(0, {}).endswith("eta 1m30s")      # one epoch seen: 10 s x 9 (an overestimate)
  now[0] = 11.0
  assert line(1, {}).endswith("time 11.0s  eta 8.0s")
  now[0] = 13.0
  assert line(3, {}).endswith("time 13.0s  eta 6.0s")
  resumed = monitor.ProgressLine(num_epochs=10, clock=lambda: now[0], start_epoch=5)
  now[0] = 23.0
  assert resumed(5, {}).endswith("eta 40.0s")   # first epoch of this process: 10 s x 4
  now[0] = 24.0
  assert resumed(6, {}).endswith("eta 3.0s")


def test_progress_line_bad_epochs():
  with pytest.raises(ValueError, match="num_epochs"):
    monitor.ProgressLine(0)


def test_histogram_subsample_is_strided_and_static():
  values = jnp.arange(10_000.0)
  sample = stats_lib.strided_sample(values, 4096)
  # stride ceil(10000 / 4096) = 3: elements 0, 3, ..., 9999.
  chex.assert_trees_all_close(sample, jnp.arange(0.0, 10_000.0, 3.0))
  assert stats_lib.strided_sample(values, None).shape == (10_000,)
  assert stats_lib.strided_sample(values, 20_000).shape == (10_000,)
  counts = stats_lib.histogram(values, 10, (0.0, 10_000.0), max_values=4096)
  assert float(counts.sum()) == 3334.0
  chex.assert_trees_all_close(counts / counts.sum(), jnp.full(10, 0.1), atol=1e-3)
