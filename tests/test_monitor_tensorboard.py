"""TensorBoard output of research.monitor, read back with TensorBoard's own readers.

The writer encodes events itself (research/monitor/events.py, no tensorboardX import): these tests
check what TensorBoard makes of them: the global-step x axis, the epoch as a scalar, per-step
losses every N steps, histograms, the config as text, and the hparams table across runs.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from research import monitor
from research.monitor import events as events_lib

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="tensorboard is a test dependency: pip install -e '.[test]'")

STEPS_PER_EPOCH = 19


def _accumulator(directory):
  acc = event_accumulator.EventAccumulator(
      directory, size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
  acc.Reload()
  return acc


def _write_run(workdir, learning_rate=1e-3, best=0.9, epochs=3, status="success"):
  """A run as the training loop writes it: config, samples, batch losses, epoch records,
  hparams."""
  config = {"optimizer": {"name": "adam", "learning_rate": learning_rate},
            "model": {"hidden_sizes": (256, 256), "batch_norm": False}, "seed": 0}
  with monitor.MetricsWriter(str(workdir), steps_per_epoch=STEPS_PER_EPOCH) as writer:
    writer.write_config(config)
    for epoch in range(epochs):
      for step in range(epoch * STEPS_PER_EPOCH, (epoch + 1) * STEPS_PER_EPOCH, 7):
        stats = {"act_0": {"act_counts": np.array([1.0, 2.0, 3.0]),
                           "act_edges": np.array([0.0, 1.0, 2.0, 3.0]), "act_mean": 1.0,
                           "act_std": 0.5, "dead_fraction": 0.0}}
        writer.write_sample(step / STEPS_PER_EPOCH, {"Dense_0/kernel": 1e-3}, stats)
      writer.write_batch_losses(epoch, np.linspace(2.0, 1.0, STEPS_PER_EPOCH) / (epoch + 1))
      writer.write_scalars(epoch + 1, {"train_loss": 1.0 / (epoch + 1), "val_accuracy": 0.5})
    writer.write_hparams(monitor.flatten_config(config),
                         {"best_val_accuracy": best, "test_accuracy": best - 0.01},
                         status=status)
  return os.path.join(str(workdir), "tensorboard")


def test_x_axis_is_the_global_step_and_epoch_is_a_scalar(tmp_path):
  acc = _accumulator(_write_run(tmp_path))
  tags = acc.Tags()
  assert {"train_loss", "val_accuracy", "epoch", "batch_loss", "update_ratio/Dense_0/kernel",
          "act_0/dead_fraction", "hparams/best_val_accuracy"} <= set(tags["scalars"])
  assert [(s.step, s.value) for s in acc.Scalars("epoch")] == [(19, 1.0), (38, 2.0), (57, 3.0)]
  assert [s.step for s in acc.Scalars("train_loss")] == [19, 38, 57]
  # Samples at global steps 0, 7, 14 of each epoch: the step the loop took them at.
  assert [s.step for s in acc.Scalars("update_ratio/Dense_0/kernel")] == [
      0, 7, 14, 19, 26, 33, 38, 45, 52]
  histograms = acc.Histograms("activations/act_0")
  assert [h.step for h in histograms][:3] == [0, 7, 14]
  assert list(histograms[0].histogram_value.bucket) == [1.0, 2.0, 3.0]
  assert list(histograms[0].histogram_value.bucket_limit) == [1.0, 2.0, 3.0]


def test_batch_loss_every_ten_steps_by_default(tmp_path):
  acc = _accumulator(_write_run(tmp_path))
  steps = [s.step for s in acc.Scalars("batch_loss")]
  assert steps == [10, 20, 30, 40, 50]
  expected = np.linspace(2.0, 1.0, STEPS_PER_EPOCH)
  by_step = {s.step: s.value for s in acc.Scalars("batch_loss")}
  assert by_step[10] == pytest.approx(expected[9])
  assert by_step[20] == pytest.approx(expected[0] / 2)  # step 20 = batch 1 of epoch 2


def test_config_as_text(tmp_path):
  acc = _accumulator(_write_run(tmp_path, learning_rate=3e-3))
  (event,) = acc.Tensors("config/text_summary")
  text = event.tensor_proto.string_val[0].decode()
  assert '"learning_rate": 0.003' in text and text.startswith("    {")
  assert acc.SummaryMetadata("config/text_summary").plugin_data.plugin_name == "text"


def _session_groups(logdir):
  """What TensorBoard's HPARAMS tab lists for ``logdir`` (its own handler, no server)."""
  from tensorboard import context  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import data_provider  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import plugin_event_multiplexer  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins import base_plugin  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import api_pb2  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import backend_context  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import list_session_groups  # pylint: disable=g-import-not-at-top
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(logdir)
  multiplexer.Reload()
  provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
  tb_context = base_plugin.TBContext(logdir=logdir, multiplexer=multiplexer,
                                     data_provider=provider)
  request = api_pb2.ListSessionGroupsRequest(
      start_index=0, slice_size=10, allowed_statuses=[0, 1, 2, 3],
      col_params=[api_pb2.ColParams(hparam="optimizer.learning_rate"),
                  api_pb2.ColParams(metric=api_pb2.MetricName(tag="hparams/best_val_accuracy"))])
  return list_session_groups.Handler(context.RequestContext(), backend_context.Context(tb_context),
                                     "", request).run().session_groups


def test_hparams_table_compares_runs(tmp_path):
  _write_run(tmp_path / "lr_small", learning_rate=1e-3, best=0.9)
  _write_run(tmp_path / "lr_big", learning_rate=1e-2, best=0.7, status="failure")
  groups = {g.name: g for g in _session_groups(str(tmp_path))}
  assert set(groups) == {"lr_small/tensorboard", "lr_big/tensorboard"}
  small, big = groups["lr_small/tensorboard"], groups["lr_big/tensorboard"]
  assert small.hparams["optimizer.learning_rate"].number_value == 1e-3
  assert big.hparams["optimizer.learning_rate"].number_value == 1e-2
  assert small.hparams["optimizer.name"].string_value == "adam"
  assert small.hparams["model.hidden_sizes"].string_value == "256,256"
  assert small.hparams["model.batch_norm"].bool_value is False
  metric = {m.name.tag: m.value for m in small.metric_values}
  assert metric["hparams/best_val_accuracy"] == pytest.approx(0.9)
  assert [s.status for s in big.sessions] == [2]  # STATUS_FAILURE
  assert [s.status for s in small.sessions] == [1]  # STATUS_SUCCESS


def test_write_hparams_rejects_an_unknown_status(tmp_path):
  with monitor.MetricsWriter(str(tmp_path)) as writer:
    with pytest.raises(ValueError, match="status='done' is not known; known: "):
      writer.write_hparams({"lr": 1.0}, {"acc": 1.0}, status="done")


def test_resumed_run_adds_an_event_file_and_tensorboard_reads_both(tmp_path):
  for start in (0, 2):
    with monitor.MetricsWriter(str(tmp_path), steps_per_epoch=10) as writer:
      for epoch in range(start, start + 2):
        writer.write_scalars(epoch + 1, {"train_loss": float(epoch)})
  assert len(os.listdir(tmp_path / "tensorboard")) == 2
  acc = _accumulator(str(tmp_path / "tensorboard"))
  assert [(s.step, s.value) for s in acc.Scalars("train_loss")] == [
      (10, 0.0), (20, 1.0), (30, 2.0), (40, 3.0)]


def test_events_parse_with_tensorboard_protos_and_crc_checked():
  """Each record's CRCs are what TensorBoard's reader checks (it rejects a wrong one)."""
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  data = events_lib.event(42, [events_lib.scalar_value("x", -1.5)], wall_time=7.0)
  event = event_pb2.Event.FromString(data)
  assert (event.step, event.wall_time, event.summary.value[0].simple_value) == (42, 7.0, -1.5)
  record = events_lib.tf_record(data)
  from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c  # pylint: disable=g-import-not-at-top
  assert record[8:12] == masked_crc32c(record[:8]).to_bytes(4, "little")
  assert record[-4:] == masked_crc32c(data).to_bytes(4, "little")


def test_importing_and_writing_pulls_no_torch_tensorboardx_or_pyplot(tmp_path):
  """Issue 18: tensorboardX imports torch (+2.2 s) and pyplot costs ~0.5 s per process."""
  code = (
      "import sys\n"
      "import research.monitor as m\n"
      "w = m.MetricsWriter(sys.argv[1], steps_per_epoch=3)\n"
      "w.write_scalars(1, {'train_loss': 1.0}); w.write_hparams({'lr': 1.0}, {'acc': 1.0})\n"
      "w.close()\n"
      "print(sorted(x for x in ('torch', 'tensorboardX', 'matplotlib.pyplot', 'jax')"
      " if x in sys.modules))\n")
  out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                       text=True, check=True)
  assert out.stdout.strip() == "[]"
