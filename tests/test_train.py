"""research.train end to end: a short run, its outputs, divergence, config and checkpoint errors."""
import json
import os

import chex
import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from research import data, models, optim, train
from research.train import loop as loop_lib
from tests.train_helpers import read_event_file, read_jsonl, small_config


@pytest.fixture(scope="module")
def dataset():
  return data.load_dataset(small_config().data)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, dataset):
  config = small_config(epochs=3)
  config.averaging.ema_decay = 0.9
  config.averaging.polyak_start_epoch = 1
  workdir = str(tmp_path_factory.mktemp("run"))
  lines = []
  result = train.train_and_evaluate(config, workdir, dataset=dataset, log=lines.append)
  return config, workdir, result, lines


def test_short_run_learns_and_reports(finished_run):
  _, workdir, result, lines = finished_run
  assert [r["epoch"] for r in result.history] == [1, 2, 3]
  assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
  assert result.best_val_accuracy > 0.85
  assert int(result.state.step) == 3 * (1257 // 64)
  assert any(line.startswith("epoch 3/3") and "val_acc" in line and "eta" in line
             for line in lines), lines
  assert any("verdict" in line for line in lines)



def test_summary_is_self_contained_and_tests_the_best_checkpoint(finished_run, dataset):
  config, workdir, result, _ = finished_run
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["status"] == "done" and summary["epochs"] == summary["num_epochs"] == 3
  assert summary["best_epoch"] in (1, 2, 3)
  assert summary["best"]["epoch"] == summary["best_epoch"]
  assert summary["last"] == pytest.approx(result.history[-1])
  assert summary["config"] == json.loads(config.to_json())
  assert summary["wall_time_s"] > 0 and summary["versions"]["jax"] == jax.__version__
  assert "git_commit" in summary
  # Test metrics of the BEST checkpoint, for the raw parameters and each average.
  assert set(summary["test"]) == {"raw", "ema", "polyak"}
  best = train.checkpoints.restore_best(workdir, config=config, dataset=dataset)
  model = models.create_model(config.model, dataset.num_classes, dataset.image_shape)
  test = train.evaluate(jax.jit(train.make_eval_step(model)), best["params"],
                        best["batch_stats"], dataset.x_test, dataset.y_test, 512)
  assert summary["test_accuracy"] == pytest.approx(test["accuracy"], abs=1e-9)
  assert summary["test"]["raw"]["accuracy"] == summary["test_accuracy"]


def test_outputs_exist_and_are_readable(finished_run):
  _, workdir, result, _ = finished_run
  rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  epochs = [r for r in rows if "val_accuracy" in r]
  assert [r["epoch"] for r in epochs] == [1.0, 2.0, 3.0]
  assert epochs[-1]["val_accuracy"] == pytest.approx(result.history[-1]["val_accuracy"])
  # Raw, EMA and Polyak parameters evaluated side by side every epoch.
  assert {"ema/val_accuracy", "polyak/val_accuracy", "ema/val_loss"} <= set(epochs[-1])
  assert sum("batch_loss" in r for r in rows) == 3 * (1257 // 64)
  assert any("update_ratio/Dense_0/kernel" in r for r in rows)
  assert any("act_0/dead_fraction" in r for r in rows)
  event_files = os.listdir(os.path.join(workdir, "tensorboard"))
  assert len(event_files) == 1
  events = read_event_file(os.path.join(workdir, "tensorboard", event_files[0]))
  tags = {v.tag for e in events for v in e.summary.value}
  assert {"train_loss", "val_accuracy", "activations/act_0", "gradients/Dense_0/kernel"} <= tags
  for name in ("loss.png", "loss_log.png", "accuracy.png", "update_ratios.png",
               "activation_histograms.png", "gradient_histograms.png",
               "first_layer_weights.png", "averages.png"):
    image = matplotlib.image.imread(os.path.join(workdir, "figures", name))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, name
  assert open(os.path.join(workdir, "verdict.txt")).read().strip()
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))  # latest and best kept


def test_best_checkpoint_restores_exported_parameters(finished_run, dataset):
  config, workdir, result, _ = finished_run
  model = models.create_model(config.model, dataset.num_classes, dataset.image_shape)
  best = train.checkpoints.restore_best(workdir, config=config, dataset=dataset)
  assert best["val_accuracy"] == pytest.approx(result.best_val_accuracy)
  eval_step = jax.jit(train.make_eval_step(model))
  val = train.evaluate(eval_step, best["params"], best["batch_stats"], dataset.x_val,
                       dataset.y_val, 512, jnp.asarray)
  assert val["accuracy"] == pytest.approx(result.best_val_accuracy, abs=1e-6)


def test_resuming_a_finished_run_trains_nothing(finished_run, dataset):
  config, workdir, result, _ = finished_run
  lines = []
  again = train.train_and_evaluate(config, workdir, dataset=dataset, log=lines.append)
  assert "resumed" in lines[0] and "epoch 3 of 3 done" in lines[0]
  chex.assert_trees_all_equal(jax.device_get(again.state.params),
                              jax.device_get(result.state.params))
  assert len(again.history) == 3


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, dataset,
                                                                    monkeypatch):
  config = small_config(epochs=4)
  steps_per_epoch = 1257 // 64
  original = loop_lib.make_train_step

  def poisoned(*args, **kwargs):  # the loss turns NaN from the first step of epoch 3
    step = original(*args, **kwargs)

    def train_step(state, x, y):
      new_state, metrics = step(state, x, y)
      nan = jnp.where(state.step >= 2 * steps_per_epoch, jnp.nan, 0.0)
      metrics = dict(metrics, loss=metrics["loss"] + nan)
      return new_state.replace(params=jax.tree.map(lambda p: p + nan, new_state.params)), metrics
    return train_step

  monkeypatch.setattr(loop_lib, "make_train_step", poisoned)
  with pytest.raises(train.DivergenceError) as info:
    train.train_and_evaluate(config, str(tmp_path), dataset=dataset, log=None)
  message = str(info.value)
  assert f"epoch 3 at step {2 * steps_per_epoch + 1}" in message
  assert "loss = nan" in message and "learning rate (0.01) is likely too high" in message
  assert "last good checkpoint (epoch 2)" in message
  ckpts = train.checkpoints.Checkpoints(str(tmp_path), create=False)
  assert ckpts.latest_epoch() == 2
  monkeypatch.undo()
  model = models.create_model(config.model, 10, (8, 8, 1))
  tx = optim.get_optimizer(config.optimizer, steps_per_epoch)
  target = train.create_train_state(config, model, tx, jax.random.PRNGKey(0), dataset)
  state, meta = ckpts.restore(2, target)
  assert meta["epoch"] == 2 and int(state.step) == 2 * steps_per_epoch
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state.params))


def test_exploding_learning_rate_diverges(tmp_path, dataset):
  config = small_config(epochs=2)
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 50.0
  with pytest.raises(train.DivergenceError, match=r"epoch 1 at step \d+: .*learning rate \(50\)"
                     r" is likely too high.*no checkpoint was written"):
    train.train_and_evaluate(config, str(tmp_path), dataset=dataset, log=None)


@pytest.mark.parametrize("field, value, message", [
    ("optimizer.name", "adamw", "unknown optimizer 'adamw'; known: sgd, momentum"),
    ("model.name", "resnet", "config.model.name='resnet' is unknown; choose one of mlp, cnn"),
    ("data.name", "imagenet", "config.data.name='imagenet' is unknown; choose one of digits"),
    ("optimizer.schedule.name", "cosine", "cosine"),
    ("model.init", "orthogonal",
     "choose one of xavier, he, small, unit, normal, zeros, constant"),
    ("model.activation", "gelu", "choose one of relu, tanh, sigmoid"),
    ("optimizer.learning_rate", -0.1, "learning_rate must be in [0, inf), got -0.1"),
    ("optimizer.beta1", 1.0, "beta1"),
    ("model.dropout", 1.0, "config.model.dropout=1.0 is a drop probability"),
    ("train.num_epochs", 0, "config.train.num_epochs=0 must be an integer >= 1"),
    ("train.batch_size", 5000, "batch_size=5000 is larger than the 1257 training examples"),
    ("loss.l2", -1.0, "config.loss.l2=-1.0 must be >= 0"),
    ("averaging.export", "ema", "export='ema' but that average is off"),
])
def test_bad_config_is_rejected_before_training(tmp_path, dataset, field, value, message):
  config = small_config()
  section, name = field.rsplit(".", 1)
  node = config
  for part in section.split("."):
    node = node[part]
  node[name] = value
  with pytest.raises(ValueError) as info:
    train.train_and_evaluate(config, str(tmp_path), dataset=dataset, log=None)
  assert message in str(info.value)
  assert not os.path.exists(tmp_path / "checkpoints")
  assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_corrupt_checkpoint_gets_a_clear_error(tmp_path, dataset):
  config = small_config(epochs=1)
  train.train_and_evaluate(config, str(tmp_path), dataset=dataset, log=None)
  state_dir = tmp_path / "checkpoints" / "1" / "state"
  for root, _, files in os.walk(state_dir):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  config.train.num_epochs = 2
  with pytest.raises(train.CheckpointError,
                     match=r"no intact checkpoint in .*checkpoints: epoch 1: state/.* does not "
                     r"match its checksum"):
    train.train_and_evaluate(config, str(tmp_path), dataset=dataset, log=None)
  assert os.path.isdir(state_dir)  # nothing already written is lost


def test_mismatched_checkpoint_gets_a_clear_error(tmp_path, dataset):
  config = small_config(epochs=1)
  train.train_and_evaluate(config, str(tmp_path), dataset=dataset, log=None)
  config.model.hidden_sizes = (16,)
  config.optimizer.learning_rate = 0.5
  with pytest.raises(train.ResumeError) as raised:
    train.train_and_evaluate(config, str(tmp_path), dataset=dataset, log=None)
  assert str(raised.value) == (
      f"{tmp_path} holds a run with a different config (2 fields differ: model.hidden_sizes: "
      "[32] (saved) vs [16] (now); optimizer.learning_rate: 0.01 (saved) vs 0.5 (now)); resume "
      f"it with its own config (--config={tmp_path}/config.json) or choose another --workdir.")
  # The checkpoint layer itself names the mismatching tensors.
  model = models.create_model(config.model, 10, (8, 8, 1))
  tx = optim.get_optimizer(config.optimizer, 19)
  target = train.create_train_state(config, model, tx, jax.random.PRNGKey(0), dataset)
  ckpts = train.checkpoints.Checkpoints(str(tmp_path), create=False)
  with pytest.raises(train.CheckpointError, match=r"\['params'\]\['Dense_0'\]\['kernel'\]: "
                     r"checkpoint \(64, 32\) vs config \(64, 16\)"):
    ckpts.restore(1, target)


def test_missing_checkpoint_directory_is_named(tmp_path):
  with pytest.raises(train.CheckpointError, match="no checkpoints in .* is it a run workdir"):
    train.checkpoints.Checkpoints(str(tmp_path / "nothing"), create=False)


def test_plateau_schedule_reduces_learning_rate(tmp_path, dataset):
  config = small_config(epochs=4)
  config.optimizer.schedule.name = "plateau"
  config.optimizer.schedule.patience = 1
  config.optimizer.schedule.min_delta = 1.0  # no epoch counts as an improvement
  config.checkpoint.enabled = False
  result = train.train_and_evaluate(config, str(tmp_path), dataset=dataset, log=None)
  rates = [r["learning_rate"] for r in result.history]
  assert rates[0] == pytest.approx(1e-2)
  assert rates[-1] < rates[0]
