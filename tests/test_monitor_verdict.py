"""Each verdict rule fires on a synthetic history showing its symptom, and only there."""

import numpy as np
import pytest

from research import monitor


def _history(losses, train_acc=None, val_acc=None, batch_noise=0.0, batches=10, seed=0,
             extra=None):
  """metrics.jsonl-like records: per-batch losses around the epoch means, plus epoch records."""
  rng = np.random.default_rng(seed)
  records = []
  n = len(losses)
  train_acc = np.linspace(0.5, 0.99, n) if train_acc is None else np.broadcast_to(train_acc, (n,))
  val_acc = np.linspace(0.48, 0.975, n) if val_acc is None else np.broadcast_to(val_acc, (n,))
  for e, loss in enumerate(losses):
    for b in range(batches):
      records.append({"epoch": e + (b + 1) / batches,
                      "batch_loss": float(loss + batch_noise * rng.standard_normal())})
    records.append({"epoch": e + 1.0, "train_loss": float(loss), "train_accuracy": float(train_acc[e]),
                    "val_loss": float(loss) + 0.05, "val_accuracy": float(val_acc[e])})
  for record in extra or []:
    records.append(record)
  return records


GOOD = 2.3 * np.exp(-0.5 * np.arange(20)) + 0.05


def _names(history):
  return [d.name for d in monitor.diagnose(history)]


def test_good_run_is_ok():
  history = _history(GOOD, batch_noise=0.02)
  assert _names(history) == ["ok"]
  assert monitor.verdict(history)[0].startswith("ok: no problem detected")


def test_diverged_nan():
  losses = list(GOOD[:5]) + [float("nan")]
  lines = monitor.verdict(_history(losses))
  assert lines[0].startswith("diverged: loss is NaN/Inf (first at epoch 6)")
  assert "learning rate too high" in lines[0]


def test_exploding():
  assert _names(_history(np.linspace(2.3, 9.0, 10)))[0] == "exploding"


def test_flat_loss_means_lr_too_low():
  history = _history(np.full(10, 2.30) - np.linspace(0, 0.02, 10))
  names = _names(history)
  assert names[0] == "flat"
  assert "learning rate too low" in monitor.verdict(history)[0]


def test_linear_decrease_means_lr_too_low():
  history = _history(2.3 - 0.05 * np.arange(20))
  assert "linear" in _names(history)
  assert "flat" not in _names(history)


def test_fast_drop_then_high_plateau():
  losses = np.concatenate([[2.3, 1.4], np.full(14, 1.2) + np.linspace(0.01, 0, 14)])
  history = _history(losses)
  assert "plateau" in _names(history)
  assert "linear" not in _names(history)


def test_noisy_batches_means_batch_too_small():
  names = _names(_history(GOOD, batch_noise=0.8))
  assert "noisy" in names
  assert "batch size" in [l for l in monitor.verdict(_history(GOOD, batch_noise=0.8))
                          if l.startswith("noisy")][0]


def test_overfitting():
  history = _history(GOOD, train_acc=np.linspace(0.6, 1.0, 20), val_acc=np.linspace(0.55, 0.85, 20))
  line = [l for l in monitor.verdict(history) if l.startswith("overfitting")][0]
  assert "regularization" in line and "gap 14.5 points" in line


def test_overfitting_mentions_early_peak():
  val = np.concatenate([np.linspace(0.5, 0.9, 10), np.linspace(0.89, 0.8, 10)])
  line = monitor.verdict(_history(GOOD, train_acc=np.linspace(0.6, 1.0, 20), val_acc=val))
  assert any("peaked at epoch 10" in l for l in line)


def test_underfitting_means_model_too_small():
  history = _history(GOOD, train_acc=np.linspace(0.3, 0.80, 20), val_acc=np.linspace(0.3, 0.795, 20))
  names = _names(history)
  assert names == ["underfitting"]
  assert "increase capacity" in monitor.verdict(history)[0]


@pytest.mark.parametrize("ratio,word", [(1e-6, "too low"), (0.2, "too high")])
def test_update_ratio_far_from_1e3(ratio, word):
  extra = [{"epoch": e / 2, "update_ratio/Dense_0/kernel": ratio, "update_ratio/Dense_1/kernel": 1e-3,
            "update_ratio/Dense_0/bias": 5.0} for e in range(10)]
  lines = [l for l in monitor.verdict(_history(GOOD, extra=extra)) if l.startswith("update_ratio")]
  assert lines == [f"update_ratio: Dense_0/kernel: learning rate likely {word} "
                   f"(update/weight ratio {ratio:.1e}, want ~1e-3)"]


def test_ratio_advice():
  assert monitor.ratio_advice(1e-3) is None
  assert monitor.ratio_advice(5e-3) is None
  assert "too low" in monitor.ratio_advice(1e-5)
  assert "too high" in monitor.ratio_advice(0.5)
  assert "too high" in monitor.ratio_advice(float("nan"))


def test_dead_relus():
  extra = [{"epoch": 1.0, "act_0/dead_fraction": 0.1, "act_1/dead_fraction": 0.2},
           {"epoch": 2.0, "act_0/dead_fraction": 0.1, "act_1/dead_fraction": 0.7}]
  lines = [l for l in monitor.verdict(_history(GOOD, extra=extra)) if l.startswith("dead_relu")]
  assert len(lines) == 1 and lines[0].startswith("dead_relu: act_1: 70% of the ReLUs")


def test_saturated_units():
  extra = [{"epoch": 2.0, "act_0/saturated_fraction": 0.8}]
  lines = [l for l in monitor.verdict(_history(GOOD, extra=extra)) if l.startswith("saturated")]
  assert len(lines) == 1 and "Xavier" in lines[0]


def test_train_result_history_without_batches():
  history = [{"epoch": e, "train_loss": float(l), "train_accuracy": 0.99, "val_loss": 0.1,
              "val_accuracy": 0.98, "learning_rate": 1e-3, "time": 1.0}
             for e, l in enumerate(GOOD)]
  assert _names(history) == ["ok"]


def test_write_verdict(tmp_path):
  with monitor.MetricsWriter(str(tmp_path), tensorboard=False) as writer:
    for record in _history(np.linspace(2.3, 9.0, 10)):
      epoch = record.pop("epoch")
      writer.write_scalars(epoch, record)
  lines = monitor.write_verdict(str(tmp_path))
  assert (tmp_path / "verdict.txt").read_text() == "\n".join(lines) + "\n"
  assert lines[0].startswith("exploding")


def test_diverged_run_gets_only_the_learning_rate_diagnosis():
  extra = [{"epoch": 1.0, "update_ratio/Dense_0/kernel": float("nan")}]
  history = _history(list(GOOD[:3]) + [float("nan")], train_acc=0.1, val_acc=0.1, extra=extra)
  assert _names(history) == ["diverged"]


def test_low_accuracy_while_loss_still_falls_is_not_underfitting():
  losses = 2.3 - 0.1 * np.arange(8) ** 1.2  # still dropping fast at the end
  history = _history(losses, train_acc=np.linspace(0.3, 0.8, 8), val_acc=np.linspace(0.3, 0.795, 8))
  assert "underfitting" not in _names(history)
