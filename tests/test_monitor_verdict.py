"""Each verdict rule fires on a synthetic history showing its symptom, and only there."""

import math

import numpy as np
import pytest

from research import monitor


def _history(losses, train_acc=None, val_acc=None, batch_noise=0.0, batches=10, seed=0,
             extra=None, val_loss=None, batch_scatter=0.0):
  """metrics.jsonl-like records: per-batch losses around the epoch means, plus epoch records.

  ``batch_noise``: additive Gaussian noise on the batch losses; ``batch_scatter``: multiplicative
  (log-normal, std of ln) noise; ``val_loss``: the validation losses (default train + 0.05)."""
  rng = np.random.default_rng(seed)
  records = []
  n = len(losses)
  train_acc = np.linspace(0.5, 0.99, n) if train_acc is None else np.broadcast_to(train_acc, (n,))
  val_acc = np.linspace(0.48, 0.975, n) if val_acc is None else np.broadcast_to(val_acc, (n,))
  val_loss = np.asarray(losses) + 0.05 if val_loss is None else np.asarray(val_loss)
  for e, loss in enumerate(losses):
    for b in range(batches):
      batch = loss * math.exp(batch_scatter * rng.standard_normal()) if batch_scatter else loss
      records.append({"epoch": e + (b + 1) / batches,
                      "batch_loss": float(batch + batch_noise * rng.standard_normal())})
    records.append({"epoch": e + 1.0, "train_loss": float(loss),
                    "train_accuracy": float(train_acc[e]), "val_loss": float(val_loss[e]),
                    "val_accuracy": float(val_acc[e])})
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
  assert "batch size" in [line for line in monitor.verdict(_history(GOOD, batch_noise=0.8))
                          if line.startswith("noisy")][0]


def test_overfitting():
  history = _history(GOOD, train_acc=np.linspace(0.6, 1.0, 20), val_acc=np.linspace(0.55, 0.85, 20))
  line = [text for text in monitor.verdict(history) if text.startswith("overfitting")][0]
  assert "regularization" in line and "gap 14.5 points" in line


def test_overfitting_mentions_early_peak():
  val = np.concatenate([np.linspace(0.5, 0.9, 10), np.linspace(0.89, 0.8, 10)])
  line = monitor.verdict(_history(GOOD, train_acc=np.linspace(0.6, 1.0, 20), val_acc=val))
  assert any("peaked at epoch 10" in text for text in line)


def test_underfitting_means_model_too_small():
  history = _history(GOOD, train_acc=np.linspace(0.3, 0.80, 20),
                     val_acc=np.linspace(0.3, 0.795, 20))
  names = _names(history)
  assert names == ["underfitting"]
  assert "increase capacity" in monitor.verdict(history)[0]


def _ratios(kernel, bias=None, other=1e-3, samples=20):
  """Update-ratio records every half epoch; ``kernel``/``bias``: a value or a function of the
  sample index. The bias is 1e10 at epoch 0 (a zero-initialized bias before its first update)."""
  value = lambda v, i: v(i) if callable(v) else v
  records = []
  for i in range(samples):
    record = {"epoch": i / 2, "update_ratio/Dense_0/kernel": value(kernel, i),
              "update_ratio/Dense_1/kernel": other}
    if bias is not None:
      record["update_ratio/Dense_0/bias"] = 1e10 if i == 0 else value(bias, i)
    records.append(record)
  return records


def _ratio_lines(extra):
  return [line for line in monitor.verdict(_history(GOOD, extra=extra))
          if line.startswith("update_ratio")]


def test_update_ratio_too_high_per_weight_leaf_with_its_distance_from_1e3():
  lines = _ratio_lines(_ratios(kernel=8.1e-3, bias=2e-3, other=6e-3))
  assert len(lines) == 1
  assert lines[0].startswith("update_ratio: updates too large for the weights: Dense_0/kernel "
                             "8.1e-03 = 8.1x the 1e-3 target, Dense_1/kernel 6.0e-03 = 6x the "
                             "1e-3 target (median over the run; healthy: weights within 5x of "
                             "1e-3, biases within 20x)")
  assert lines[0].endswith("learning rate likely too high (lower it; the ratio scales with it)")


def test_update_ratio_too_low_is_judged_early():
  lines = _ratio_lines(_ratios(kernel=lambda i: 1e-5 if i < 5 else 1e-3, other=3e-4))
  assert len(lines) == 1
  assert lines[0].startswith("update_ratio: updates too small for the weights: Dense_0/kernel "
                             "1.0e-05 = 1/100 of the 1e-3 target (median over the first quarter")
  assert "Dense_1/kernel" not in lines[0]  # 3e-4 is inside the band
  assert "learning rate likely too low" in lines[0]


def test_update_ratio_in_band_or_converging_is_not_flagged():
  # 4x above and below 1e-3 is inside the 5x band; a ratio that falls from 3e-3 to 1e-5 as the
  # run converges is not "learning rate too low" (judged early) nor too high (judged late).
  assert _ratio_lines(_ratios(kernel=4e-3, other=2.5e-4, bias=1.5e-2)) == []
  assert _ratio_lines(_ratios(kernel=lambda i: 3e-3 * 0.5 ** i)) == []


def test_bias_judged_from_its_first_real_update():
  assert _ratio_lines(_ratios(kernel=1e-3, bias=1e-2)) == []  # 1e10 at epoch 0 is ignored
  lines = _ratio_lines(_ratios(kernel=1e-3, bias=5.0))
  assert len(lines) == 1 and "Dense_0/bias 5.0e+00 = 5000x the 1e-3 target" in lines[0]
  assert "Dense_0/kernel" not in lines[0]


def test_update_ratio_summary_windows():
  summary = monitor.update_ratio_summary(_ratios(kernel=lambda i: 1e-3 * (i + 1), bias=1e-2))
  assert summary["Dense_0/kernel"] == {"kind": "weight", "early_median": pytest.approx(3e-3),
                                       "run_median": pytest.approx(10.5e-3), "low": 2e-4,
                                       "high": pytest.approx(5e-3)}
  assert summary["Dense_0/bias"]["kind"] == "bias"
  assert summary["Dense_0/bias"]["early_median"] == pytest.approx(1e-2)
  assert summary["Dense_0/bias"]["high"] == pytest.approx(2e-2)


def test_ratio_advice():
  assert monitor.ratio_advice(1e-3) is None
  assert monitor.ratio_advice(5e-3) is None
  assert monitor.ratio_advice(2e-4) is None
  assert monitor.ratio_advice(8.1e-3) == ("learning rate likely too high (update/weight 8.1e-03 = "
                                          "8.1x the 1e-3 target)")
  assert monitor.ratio_advice(1e-5) == ("learning rate likely too low (update/weight 1.0e-05 = "
                                        "1/100 of the 1e-3 target)")
  assert "too high" in monitor.ratio_advice(float("nan"))


def test_dead_relus():
  extra = [{"epoch": 1.0, "act_0/dead_fraction": 0.1, "act_1/dead_fraction": 0.2},
           {"epoch": 2.0, "act_0/dead_fraction": 0.1, "act_1/dead_fraction": 0.7}]
  lines = [line for line in monitor.verdict(_history(GOOD, extra=extra))
           if line.startswith("dead_relu")]
  assert len(lines) == 1 and lines[0].startswith("dead_relu: act_1: 70% of the ReLUs")


def test_saturated_units():
  extra = [{"epoch": 2.0, "act_0/saturated_fraction": 0.8}]
  lines = [line for line in monitor.verdict(_history(GOOD, extra=extra))
           if line.startswith("saturated")]
  assert len(lines) == 1 and "Xavier" in lines[0]


def test_train_result_history_without_batches():
  history = [{"epoch": e, "train_loss": float(loss), "train_accuracy": 0.99, "val_loss": 0.1,
              "val_accuracy": 0.98, "learning_rate": 1e-3, "time": 1.0}
             for e, loss in enumerate(GOOD)]
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


# ----------------------------------------------------------------------------- issue 18 rules

# The default run (issue 18): validation loss lowest at epoch 8 (0.076), 0.097 at epoch 30,
# training loss down to 1e-3 with 100% training accuracy.
DEFAULT_TRAIN = 2.3 * np.exp(-0.25 * np.arange(1, 31))
DEFAULT_VAL = np.concatenate([np.linspace(0.9, 0.076, 8), np.linspace(0.078, 0.097, 22)])


def _default_like(**kw):
  return _history(DEFAULT_TRAIN, train_acc=np.minimum(np.linspace(0.6, 1.2, 30), 1.0),
                  val_acc=np.minimum(np.linspace(0.8, 1.1, 30), 0.985), val_loss=DEFAULT_VAL,
                  batch_scatter=0.3, **kw)


def test_overfitting_by_validation_loss_rising_while_training_loss_falls():
  history = _default_like()
  assert _names(history) == ["overfitting"]
  (line,) = monitor.verdict(history)
  assert line.startswith("overfitting: validation loss rose 24%")
  assert "after epoch 9 (3-epoch means 0.0776 -> 0.0961 at epoch 30)" in line
  assert "while the training loss fell from 0.242 to 0.00127" in line
  assert "raise regularization" in line and "the best checkpoint is kept" in line


def test_validation_loss_that_keeps_falling_or_only_wiggles_is_not_overfitting():
  wiggle = 0.08 * (1 + 0.04 * np.sin(np.arange(30) * 2.0))  # +-4% around a flat level
  for val in (np.linspace(0.9, 0.08, 30), np.concatenate([np.linspace(0.9, 0.08, 8),
                                                          wiggle[8:]])):
    history = _history(DEFAULT_TRAIN, val_loss=val, batch_scatter=0.3)
    assert "overfitting" not in _names(history), val


def test_validation_loss_rising_with_the_training_loss_is_not_overfitting():
  train = np.concatenate([np.linspace(2.3, 0.05, 10), np.linspace(0.06, 0.3, 10)])
  history = _history(train, val_loss=train + 0.05)
  assert "overfitting" not in _names(history)


def _lr_1e2_like(**kw):
  """lr 1e-2 (issue 18): val loss up 4x, batch losses between 1e-5 and 1, ratios ~8e-3."""
  train = np.concatenate([[0.6, 0.16, 0.1, 0.055], np.geomspace(0.05, 1e-3, 26)])
  val = np.concatenate([[0.2, 0.17, 0.15, 0.14], np.linspace(0.2, 0.56, 26)])
  extra = _ratios(kernel=8e-3, bias=1e-2, other=8.5e-3, samples=60)
  return _history(train, val_loss=val, batch_scatter=2.5, extra=extra,
                  train_acc=np.linspace(0.8, 1.0, 30), val_acc=np.full(30, 0.97), **kw)


def test_lr_1e2_run_gets_overfitting_noise_and_update_ratio():
  history = _lr_1e2_like()
  assert _names(history) == ["noisy", "overfitting", "update_ratio"]
  lines = dict(line.split(": ", 1) for line in monitor.verdict(history))
  assert lines["noisy"].endswith(
      "raise the batch size (config.train.batch_size) or lower the learning rate")
  assert lines["update_ratio"].startswith(
      "updates too large for the weights: Dense_0/kernel 8.0e-03 = 8x the 1e-3 target, "
      "Dense_1/kernel 8.5e-03 = 8.5x the 1e-3 target (median over the run")
  assert "learning rate likely too high" in lines["update_ratio"]


def test_noisy_is_judged_relative_to_the_trend_in_log_space():
  # A loss near 1e-3 scattering +-35% (healthy: batches differ) is not noisy; a factor 5 is.
  assert "noisy" not in _names(_history(GOOD, batch_scatter=0.35))
  line = [text for text in monitor.verdict(_history(GOOD, batch_scatter=1.6))
          if text.startswith("noisy")]
  assert len(line) == 1 and "scatter a factor 3.73 around the epoch's trend" in line[0]


def test_noisy_survives_zero_batch_losses():
  history = _history(GOOD, batch_scatter=2.0)
  for record in history[::3]:
    if "batch_loss" in record:
      record["batch_loss"] = 0.0  # fp32 underflow of a perfectly fit batch
  assert "noisy" in _names(history)


def test_one_layer_out_of_the_band_does_not_judge_the_learning_rate():
  # The output layer starts 10x smaller (model.output_scale) and runs high: the median leaf is
  # what the one learning rate is judged by.
  extra = _ratios(kernel=1e-3, other=1e-3, samples=20)
  for record in extra:
    record["update_ratio/Dense_2/kernel"] = 9e-3
  assert _ratio_lines(extra) == []


def test_dead_units_judged_on_the_late_median_per_layer():
  extra = [{"epoch": e / 2, "act_0/dead_fraction": 0.05,
            "act_1/dead_fraction": 0.1 if e < 15 else 0.4} for e in range(20)]
  lines = [line for line in monitor.verdict(_history(GOOD, extra=extra))
           if line.startswith("dead_relu")]
  assert lines == ["dead_relu: act_1: 40% of the ReLUs never fire on a batch (dead; median over "
                   "the last quarter of the run): use He initialization, lower the learning rate, "
                   "or try batch norm"]
  # One unlucky batch at the end (a rare unit silent on it) is not a dead layer.
  spike = [{"epoch": e / 2, "act_0/dead_fraction": 0.9 if e == 19 else 0.05} for e in range(20)]
  assert "dead_relu" not in _names(_history(GOOD, extra=spike))


def test_rising_loss_is_not_flat_and_lr_too_low():
  """Issue 14 item 7: a loss INCREASE used to count as flat ("learning rate too low")."""
  history = _history(np.linspace(2.3, 2.9, 10))
  lines = monitor.verdict(history)
  assert _names(history) == ["rising"]
  assert lines[0].startswith("rising: training loss rose from 2.3 to 2.9: learning rate likely "
                             "too high")
  assert not any("too low" in line for line in lines)


def test_spike_and_back_is_exploding_not_flat():
  losses = np.array([2.3, 2.0, 5.0, 9.0, 4.0, 2.28, 2.26, 2.25])
  assert _names(_history(losses)) == ["exploding"]


def test_flat_still_flat():
  assert _names(_history(np.linspace(2.30, 2.25, 10)))[0] == "flat"


def test_linear_lr_too_low_does_not_also_say_model_too_small():
  losses = 2.3 - 0.04 * np.arange(30)
  history = _history(losses, train_acc=np.linspace(0.3, 0.84, 30),
                     val_acc=np.linspace(0.3, 0.832, 30))
  assert _names(history) == ["linear"]


def _diverged_history():
  """Stopped mid-epoch 4: batch losses of that epoch end in NaN, no epoch record, NaN ratios and
  unit statistics (what metrics.jsonl holds when the loop calls write_verdict on divergence)."""
  records = _history(GOOD[:3], extra=_ratios(kernel=1e-3, samples=6))
  for b, loss in enumerate([0.3, 4.0, 80.0, float("inf"), float("nan")]):
    records.append({"epoch": 3 + (b + 1) / 10, "batch_loss": loss})
  records.append({"epoch": 3.3, "update_ratio/Dense_0/kernel": float("nan"),
                  "act_0/dead_fraction": float("nan"), "act_0/mean": float("nan")})
  return records


def test_diverged_history_is_judged_diverged_first(tmp_path):
  history = _diverged_history()
  assert _names(history) == ["diverged"]
  with monitor.MetricsWriter(str(tmp_path), tensorboard=False) as writer:
    for record in history:
      record = dict(record)
      writer.write_scalars(record.pop("epoch"), record)
  lines = monitor.write_verdict(str(tmp_path))
  assert lines[0].startswith("diverged: loss is NaN/Inf (first at epoch 4): learning rate too "
                             "high")
  assert (tmp_path / "verdict.txt").read_text().startswith("diverged: ")


def test_stopped_by_the_divergence_factor_is_exploding():
  """The loop stops at loss > divergence_factor x the first one (finite): no epoch record for that
  epoch, its batch losses say it."""
  records = _history(GOOD[:3])
  records += [{"epoch": 3 + (b + 1) / 10, "batch_loss": loss}
              for b, loss in enumerate([0.3, 2.0, 30.0])]
  lines = monitor.verdict(records)
  assert lines == ["exploding: loss grew from 2.35 to 30 (epoch 4, where the run stopped): "
                   "learning rate too high (lower it 3-10x)"]


def test_healthy_run_with_every_record_is_ok():
  extra = _ratios(kernel=lambda i: 3e-3 * 0.85 ** i, bias=lambda i: 8e-3 * 0.85 ** i,
                  other=1e-3, samples=40)
  extra += [{"epoch": e / 2, "act_0/dead_fraction": 0.05, "act_1/saturated_fraction": 0.1}
            for e in range(40)]
  history = _history(GOOD, batch_scatter=0.3, extra=extra)
  assert monitor.verdict(history) == [
      "ok: no problem detected by the playbook's rules (loss shape and noise, validation loss and "
      "accuracy gap, update ratios, dead/saturated units where recorded)"]
