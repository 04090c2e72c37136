"""The end-of-run verdict, in the playbook's terms (CS231n "Babysitting the learning process").

``verdict(history)`` reads per-epoch records (``train_loss``, ``train_accuracy``, ``val_loss``,
``val_accuracy``) and, when present, the per-batch losses (``batch_loss``), the sampled update
ratios (``update_ratio/<leaf>``) and the activation statistics (``act_i/dead_fraction``,
``act_i/saturated_fraction``). ``history`` may be ``TrainResult.history`` or all the records of
``metrics.jsonl`` (``research.monitor.read_metrics(workdir)``), which carry every key. A history
that ends in NaN/Inf (a diverged run, stopped mid-epoch) is judged too: ``diverged`` comes first.

Rules (each a :class:`Diagnosis` with a short ``name``; thresholds and why in :class:`Thresholds`
and research/monitor/README.md):

================  ========================================================  =====================
name              symptom                                                   advice
================  ========================================================  =====================
``diverged``      NaN/Inf loss                                              lr too high
``exploding``     a loss above ``explode_factor`` x the initial loss        lr too high
``rising``        final training loss above the initial one                 lr too high / a bug
``flat``          loss fell by < ``flat_drop`` of its initial value         lr too low / a bug
``linear``        epoch losses on a straight line (R^2 > ``linear_r2``)     lr too low
``plateau``       fast early drop, then flat at a high loss                 lr too high: decay it
``noisy``         batch losses scatter > ``noise_log_std`` around trend     bigger batch / lower lr
``overfitting``   val loss up > ``overfit_val_rise`` from its minimum       regularization, early
                  while train loss falls; or accuracy gap > ``overfit_gap``  stopping
``underfitting``  train ~ val, both low, loss no longer falling             more capacity
``update_ratio``  the median weight's ||update||/||w|| above 1e-3 x         lr too high / too low
                  ``ratio_factor`` (run) or below 1e-3 / it (early)
``dead_relu``     > ``dead_fraction`` of a layer's relus never fire         He init / lower lr
``saturated``     > ``saturated_fraction`` of tanh/sigmoid outputs          Xavier init / inputs
``ok``            none of the above                                         --
================  ========================================================  =====================
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

from research.monitor import records as records_lib

TARGET_UPDATE_RATIO = 1e-3


class Thresholds(NamedTuple):
  """Where each rule fires: the playbook's rough numbers, checked against 30-epoch digits runs
  (healthy: Adam 1e-3 MLP and CNN, Adam 3e-3, SGD 3e-2, L2 1e-3; sick: Adam 1e-2 and 3e-2,
  SGD 1e-3, batch 8). research/monitor/README.md has each rule's measured values.

  * ``explode_factor``: an epoch's training loss (or a batch loss of the epoch a run was stopped
    in) above this x the initial loss: ``exploding``.
  * ``flat_drop``: the training loss fell by less than this share of its start: ``flat``; a loss
    that ended HIGHER than it started is ``rising``, never ``flat``.
  * ``linear_r2``, ``linear_min_epochs``: the epoch losses fit a falling straight line this well
    over at least that many epochs: ``linear`` (SGD 1e-3: R^2 0.984).
  * ``plateau_*``: more than ``early_fraction`` of the drop in the first quarter, less than
    ``late_change`` over the second half, still above ``high_loss`` x the start: ``plateau``.
  * ``noise_log_std``: median over epochs of the std of ln(batch loss) around the epoch's own
    linear trend (1.0: batches typically a factor e off the trend): ``noisy``. Healthy batch-64
    runs 0.01-0.37; batch 8 1.23; Adam 3e-2 1.73, Adam 1e-2 2.26.
  * ``overfit_val_rise``, ``overfit_min_epochs_after``: the validation loss's 3-epoch mean rose
    by more than this share above its lowest 3-epoch mean, that many epochs or more before the
    end, while the training loss went lower: ``overfitting`` (default run: +20%, Adam 1e-2:
    +631%; healthy runs: 0%; epoch-to-epoch val-loss noise 0.3-9%, 3-epoch means halve it).
  * ``overfit_gap``: train - val accuracy (mean of the last 3 epochs) above this: ``overfitting``.
  * ``underfit_*``: train and val accuracy within ``gap``, both below ``accuracy``, and the loss
    fell less than ``plateau`` over the last 3 epochs: ``underfitting`` (not when the learning
    rate is too low: ``flat``/``linear`` explain low accuracy).
  * ``ratio_factor``: the weights' healthy band is 1e-3 / and x this. Too high: the median leaf's
    median ratio over the run is above it (Adam 1e-2: 8.7e-3; healthy runs: <= 1.5e-3). Too low:
    the median leaf's median over the first quarter of the run, when it should learn fastest, is
    below it (SGD 1e-3: 1.2e-5; healthy: >= 5.4e-4; late in a run small ratios only mean it has
    converged).
  * ``bias_ratio_factor``: the same for biases, from their first real update (a zero bias has a
    ratio of ~1e10 before it), in a band 4x wider: healthy runs have bias ratios 2-8x their
    layer's kernel's.
  * ``dead_fraction``: median over the last quarter of the samples of a layer's share of ReLUs
    that never fire on a batch, above this: ``dead_relu`` (Adam 3e-2: 85%; Adam 1e-2: 25%, not
    flagged; healthy: <= 15%, the CNN's dense layer).
  * ``saturated_fraction``: the same for tanh/sigmoid outputs within 0.01 of their limits.
  """
  explode_factor: float = 1.5
  flat_drop: float = 0.05
  linear_r2: float = 0.98
  linear_min_epochs: int = 5
  plateau_early_fraction: float = 0.8
  plateau_late_change: float = 0.02
  plateau_high_loss: float = 0.25
  noise_log_std: float = 1.0
  overfit_val_rise: float = 0.10
  overfit_min_epochs_after: int = 3
  overfit_gap: float = 0.05
  underfit_gap: float = 0.02
  underfit_accuracy: float = 0.95
  underfit_plateau: float = 0.1
  ratio_factor: float = 5.0
  bias_ratio_factor: float = 20.0
  dead_fraction: float = 0.25
  saturated_fraction: float = 0.5

  @property
  def ratio_low(self) -> float:
    return TARGET_UPDATE_RATIO / self.ratio_factor

  @property
  def ratio_high(self) -> float:
    return TARGET_UPDATE_RATIO * self.ratio_factor


class Diagnosis(NamedTuple):
  name: str
  message: str


def _factor(value: float) -> str:
  return f"{value:.2g}" if value < 10 else f"{value:.0f}"


def ratio_distance(ratio: float) -> str:
  """``"8.1e-03 = 8.1x the 1e-3 target"`` or ``"5.7e-06 = 1/175 of the 1e-3 target"``."""
  ratio = float(ratio)
  if not math.isfinite(ratio):
    return f"{ratio} (not finite)"
  if ratio >= TARGET_UPDATE_RATIO:
    return f"{ratio:.1e} = {_factor(ratio / TARGET_UPDATE_RATIO)}x the 1e-3 target"
  if ratio <= 0:
    return f"{ratio:.1e} (no update)"
  return f"{ratio:.1e} = 1/{_factor(TARGET_UPDATE_RATIO / ratio)} of the 1e-3 target"


def ratio_advice(ratio: float, low: float | None = None,
                 high: float | None = None) -> str | None:
  """Advice when an update/weight ratio is far from the playbook's ~1e-3, else None.

  ``ratio < low`` (default 1e-3 / 5 = 2e-4): "learning rate likely too low"; ``ratio > high``
  (default 1e-3 * 5 = 5e-3) or non-finite: "learning rate likely too high"; with the distance,
  e.g. ``learning rate likely too high (update/weight 8.1e-03 = 8.1x the 1e-3 target)``.
  """
  low = Thresholds().ratio_low if low is None else low
  high = Thresholds().ratio_high if high is None else high
  ratio = float(ratio)
  if not math.isfinite(ratio) or ratio > high:
    return f"learning rate likely too high (update/weight {ratio_distance(ratio)})"
  if ratio < low:
    return f"learning rate likely too low (update/weight {ratio_distance(ratio)})"
  return None


def _finite(values: np.ndarray) -> np.ndarray:
  return values[np.isfinite(values)]


def _epoch_of_batch(batch_epoch: float) -> int:
  """The 1-based epoch a batch at fractional epoch ``e + (i + 1) / n`` belongs to."""
  return int(math.floor(batch_epoch - 1e-9)) + 1


def _divergence(records: list[Mapping[str, Any]]) -> list[Diagnosis]:
  """``diverged`` when any loss (epoch, batch or validation) is NaN/Inf."""
  where = []
  for key, batch in (("train_loss", False), ("batch_loss", True), ("val_loss", False)):
    epochs, values = records_lib.series(records, key)
    bad = epochs[~np.isfinite(values)]
    if bad.size:
      where.append(_epoch_of_batch(bad[0]) if batch else int(round(bad[0])))
  if not where:
    return []
  return [Diagnosis("diverged", f"loss is NaN/Inf (first at epoch {min(where)}): learning rate "
                    "too high (lower it 3-10x), or check the data and loss for log(0)/division "
                    "by 0")]


def _smooth(values: np.ndarray, width: int = 3) -> np.ndarray:
  """Running mean over ``width`` epochs (``values.size - width + 1`` values)."""
  return np.convolve(values, np.ones(width) / width, mode="valid")


def _noise_rule(records: list[Mapping[str, Any]], t: Thresholds) -> list[Diagnosis]:
  """Batch-to-batch scatter of the loss around each epoch's trend, in log space (scale-free:
  1e-3 +- 5e-4 late in training counts like 1 +- 0.5 early on)."""
  scatter = []
  for chunk in records_lib.batch_losses_by_epoch(records):
    chunk = chunk[np.isfinite(chunk)]
    if chunk.size < 4:
      continue
    median = float(np.median(chunk))
    if median <= 0:
      continue
    # A batch loss of exactly 0 (fp32 underflow) counts as 1000x below the epoch's median.
    logs = np.log(np.maximum(chunk, 1e-3 * median))
    x = np.arange(chunk.size, dtype=np.float64)
    trend = np.polyval(np.polyfit(x, logs, 1), x)
    scatter.append(float(np.std(logs - trend)))
  if not scatter:
    return []
  noise = float(np.median(scatter))
  if noise <= t.noise_log_std:
    return []
  return [Diagnosis("noisy", f"the loss is noisy from batch to batch: batch losses scatter a "
                    f"factor {math.exp(noise):.3g} around the epoch's trend (std of ln(loss) "
                    f"{noise:.2f}, median over {len(scatter)} epochs; healthy runs ~0.3): raise "
                    "the batch size (config.train.batch_size) or lower the learning rate")]


def _loss_rules(records: list[Mapping[str, Any]], t: Thresholds) -> list[Diagnosis]:
  out = _divergence(records)
  if out:
    return out
  epochs, losses = records_lib.series(records, "train_loss")
  batch_epochs, batch = records_lib.series(records, "batch_loss")
  initial = float(batch[0]) if batch.size else (float(losses[0]) if losses.size else math.nan)
  if not initial > 0:
    return _noise_rule(records, t)  # no start to measure the loss's shape against
  # Batches after the last epoch record: the epoch the run was stopped in (divergence check).
  last_epoch = float(epochs[-1]) if epochs.size else 0.0
  stopped = batch[batch_epochs > last_epoch + 1e-9]
  peaks = [(float(v), f"epoch {e:g}") for e, v in zip(epochs, losses)]
  if stopped.size:
    peaks.append((float(np.max(stopped)), f"epoch {int(last_epoch) + 1}, where the run stopped"))
  if peaks:
    peak, at = max(peaks)
    if peak > t.explode_factor * initial:
      return [Diagnosis("exploding", f"loss grew from {initial:.3g} to {peak:.3g} ({at}): "
                        "learning rate too high (lower it 3-10x)")]
  if losses.size < 2:
    return out
  final = float(losses[-1])
  drop = (initial - final) / initial
  if drop < 0:
    # A loss that went UP is never "flat: learning rate too low" (issue 14 item 7).
    return [Diagnosis("rising", f"training loss rose from {initial:.3g} to {final:.3g}: "
                      "learning rate likely too high (lower it 3x), or a bug (check the "
                      "gradients: scripts/gradcheck.py)")]
  if drop < t.flat_drop:
    return [Diagnosis("flat", f"loss barely moved ({initial:.3g} -> {final:.3g}, "
                      f"{drop:.1%}): learning rate too low (raise it 3-10x), or check "
                      "gradients (scripts/gradcheck.py) and that the data has labels")]
  n = losses.size
  if n >= t.linear_min_epochs:
    x = np.arange(n, dtype=np.float64)
    slope, intercept = np.polyfit(x, losses, 1)
    residual = losses - (slope * x + intercept)
    total = np.sum((losses - losses.mean()) ** 2)
    r2 = 1.0 - np.sum(residual ** 2) / total if total > 0 else 0.0
    if slope < 0 and r2 > t.linear_r2:
      out.append(Diagnosis("linear", f"loss decreases linearly (R^2 {r2:.3f} over {n} "
                           "epochs): learning rate likely too low (raise it 3x); a good "
                           "curve drops fast, then bends"))
  if n >= 8:
    quarter = losses[max(1, n // 4)]
    half = losses[n // 2]
    total_drop = initial - final
    early_share = (initial - quarter) / total_drop if total_drop > 0 else 0.0
    late_change = abs(half - final) / max(abs(half), 1e-12)
    if (early_share > t.plateau_early_fraction and late_change < t.plateau_late_change
        and final > t.plateau_high_loss * initial):
      out.append(Diagnosis("plateau", f"loss dropped fast, then plateaued at {final:.3g} "
                           f"({final / initial:.0%} of its start): learning rate likely too "
                           "high to settle; decay it (schedule step/exponential/plateau)"))
  return out + _noise_rule(records, t)


def _val_loss_overfitting(records: list[Mapping[str, Any]], t: Thresholds) -> str | None:
  """The validation-loss half of the overfitting rule: its 3-epoch mean rose by more than
  ``overfit_val_rise`` from its lowest, at least ``overfit_min_epochs_after`` epochs before the
  end, while the training loss went lower."""
  val_epochs, val = records_lib.series(records, "val_loss")
  epochs, train = records_lib.series(records, "train_loss")
  if val.size < 3 + t.overfit_min_epochs_after or not np.all(np.isfinite(val)):
    return None
  smooth = _smooth(val)
  best = int(np.argmin(smooth))
  best_epoch = float(val_epochs[best + 1])  # the middle of the window
  if val_epochs[-1] - best_epoch < t.overfit_min_epochs_after or smooth[best] <= 0:
    return None
  rise = smooth[-1] / smooth[best] - 1.0
  train_at = dict(zip(epochs, train))
  if rise <= t.overfit_val_rise or best_epoch not in train_at or epochs.size == 0:
    return None
  train_then, train_now = float(train_at[best_epoch]), float(train[-1])
  if not train_now < train_then:
    return None
  return (f"validation loss rose {rise:.0%} after epoch {best_epoch:g} (3-epoch means "
          f"{smooth[best]:.3g} -> {smooth[-1]:.3g} at epoch {val_epochs[-1]:g}) while the "
          f"training loss fell from {train_then:.3g} to {train_now:.3g}")


def _fit_rules(records: list[Mapping[str, Any]], t: Thresholds) -> list[Diagnosis]:
  """Overfitting (validation loss rising, or an accuracy gap) and underfitting."""
  epochs, train = records_lib.series(records, "train_accuracy")
  val_epochs, val = records_lib.series(records, "val_accuracy")
  symptoms = []
  rising = _val_loss_overfitting(records, t)
  if rising:
    symptoms.append(rising)
  tr = va = math.nan
  common = np.intersect1d(epochs, val_epochs)
  if common.size:
    train_at, val_at = dict(zip(epochs, train)), dict(zip(val_epochs, val))
    last = common[-3:]
    tr = float(np.mean([train_at[e] for e in last]))
    va = float(np.mean([val_at[e] for e in last]))
  gap = tr - va
  if math.isfinite(gap) and gap > t.overfit_gap:
    symptoms.append(f"train accuracy {tr:.1%} vs validation {va:.1%} (gap {100 * gap:.1f} "
                    "points, last 3 epochs)")
  if symptoms:
    stop = ""
    if val.size and np.any(np.isfinite(val)):
      best_epoch = val_epochs[int(np.nanargmax(val))]
      if best_epoch < val_epochs[-1]:
        stop = f"; validation accuracy peaked at epoch {best_epoch:g}"
    return [Diagnosis("overfitting", "; ".join(symptoms) + ": raise regularization "
                      "(config.loss.l2 / optimizer.weight_decay, model.dropout), get more data, "
                      "or stop earlier (the best checkpoint is kept: restore_best)" + stop)]
  if not math.isfinite(gap):
    return []
  _, losses = records_lib.series(records, "train_loss")
  still_improving = (losses.size >= 3 and losses[-3] > 0
                     and (losses[-3] - losses[-1]) / losses[-3] >= t.underfit_plateau)
  if abs(gap) < t.underfit_gap and tr < t.underfit_accuracy and not still_improving:
    return [Diagnosis("underfitting", f"train ({tr:.1%}) and validation ({va:.1%}) accuracy "
                      "track each other and are both low: model likely too small: increase "
                      "capacity (wider/deeper layers), or train longer")]
  return []


WEIGHT_SUFFIXES = ("kernel", "embedding")
BIAS_SUFFIXES = ("bias",)


def _leaf_kind(leaf: str, weights_named: bool) -> str | None:
  """'weight', 'bias' or None (not judged: e.g. batch-norm scales) for a parameter leaf name."""
  last = leaf.rsplit("/", 1)[-1]
  if last.endswith(BIAS_SUFFIXES):
    return "bias"
  if last.endswith(WEIGHT_SUFFIXES) or not weights_named:
    return "weight"
  return None


def update_ratio_summary(records: Iterable[Mapping[str, Any]],
                         thresholds: Thresholds = Thresholds()) -> dict[str, dict[str, Any]]:
  """Per judged leaf: ``{'kind', 'early_median', 'run_median', 'low', 'high'}``.

  ``early_median``: median ratio over the first quarter of the leaf's samples (the learning
  phase), ``run_median``: over all of them. Biases skip their samples at epoch 0 (before the first
  update a zero bias has a ratio of ~1e10). ``low``/``high``: the leaf's band, 1e-3 / and x
  ``ratio_factor`` (weights) or ``bias_ratio_factor`` (biases). A non-finite sample makes both
  medians NaN.
  """
  records = list(records)
  keys = records_lib.keys_with_prefix(records, "update_ratio/")
  leaves = [k[len("update_ratio/"):] for k in keys]
  weights_named = any(_leaf_kind(leaf, True) == "weight" for leaf in leaves)
  out = {}
  for key, leaf in zip(keys, leaves):
    kind = _leaf_kind(leaf, weights_named)
    if kind is None:
      continue
    epochs, values = records_lib.series(records, key)
    if kind == "bias":
      values = values[epochs > 0]
    if values.size == 0:
      continue
    finite = bool(np.all(np.isfinite(values)))
    early = values[:max(1, values.size // 4)]
    factor = thresholds.ratio_factor if kind == "weight" else thresholds.bias_ratio_factor
    out[leaf] = {"kind": kind,
                 "early_median": float(np.median(early)) if finite else math.nan,
                 "run_median": float(np.median(values)) if finite else math.nan,
                 "low": TARGET_UPDATE_RATIO / factor, "high": TARGET_UPDATE_RATIO * factor}
  return out


def _ratio_rules(records: list[Mapping[str, Any]], t: Thresholds) -> list[Diagnosis]:
  """The learning rate is one number for all layers: it is judged by the TYPICAL leaf of a kind
  (the median over the weight leaves, then over the biases); the message lists every leaf of that
  kind outside its band, with its distance from 1e-3. One layer alone out of the band (the output
  layer, initialized at model.output_scale = 0.1, runs high for its first epochs) shows in the
  figure, not here."""
  summary = update_ratio_summary(records, t)
  high, low = [], []
  for kind in ("weight", "bias"):
    leaves = {leaf: s for leaf, s in summary.items() if s["kind"] == kind}
    if not leaves:
      continue
    run = np.array([s["run_median"] for s in leaves.values()])
    early = np.array([s["early_median"] for s in leaves.values()])
    band = next(iter(leaves.values()))
    if not np.all(np.isfinite(run)) or float(np.median(run)) > band["high"]:
      high += [f"{leaf} {ratio_distance(s['run_median'])}" for leaf, s in leaves.items()
               if not s["run_median"] <= s["high"]]
    elif float(np.median(early)) < band["low"]:
      low += [f"{leaf} {ratio_distance(s['early_median'])}" for leaf, s in leaves.items()
              if s["early_median"] < s["low"]]
  out = []
  band = (f"healthy: weights within {t.ratio_factor:g}x of 1e-3, biases within "
          f"{t.bias_ratio_factor:g}x")
  if high:
    out.append(Diagnosis("update_ratio", f"updates too large for the weights: "
                         f"{', '.join(high)} (median over the run; {band}): learning rate "
                         "likely too high (lower it; the ratio scales with it)"))
  if low:
    out.append(Diagnosis("update_ratio", f"updates too small for the weights: "
                         f"{', '.join(low)} (median over the first quarter of the run, when it "
                         f"should learn fastest; {band}): learning rate likely too low (raise "
                         "it; the ratio scales with it)"))
  return out


def _late_median(records: list[Mapping[str, Any]], key: str) -> float:
  """Median of ``key`` over the last quarter of its samples (NaN when absent)."""
  _, values = records_lib.series(records, key)
  values = _finite(values)
  return float(np.median(values[-max(1, values.size // 4):])) if values.size else math.nan


def _unit_rules(records: list[Mapping[str, Any]], t: Thresholds) -> list[Diagnosis]:
  out = []
  for key in records_lib.keys_with_suffix(records, "/dead_fraction"):
    fraction = _late_median(records, key)
    if fraction > t.dead_fraction:
      out.append(Diagnosis("dead_relu", f"{key.split('/')[0]}: {fraction:.0%} of the ReLUs "
                           "never fire on a batch (dead; median over the last quarter of the "
                           "run): use He initialization, lower the learning rate, or try "
                           "batch norm"))
  for key in records_lib.keys_with_suffix(records, "/saturated_fraction"):
    fraction = _late_median(records, key)
    if fraction > t.saturated_fraction:
      out.append(Diagnosis("saturated", f"{key.split('/')[0]}: {fraction:.0%} of the "
                           "tanh/sigmoid outputs are saturated (gradients vanish): use Xavier "
                           "initialization (smaller weights), standardize the inputs, or use "
                           "relu / batch norm"))
  return out


def diagnose(history: Iterable[Mapping[str, Any]],
             thresholds: Thresholds = Thresholds()) -> list[Diagnosis]:
  """All diagnoses for a run (see the module docstring); ``[Diagnosis('ok', ...)]`` if none."""
  records = [r for r in history]
  out = _loss_rules(records, thresholds)
  if any(d.name in ("diverged", "exploding", "rising") for d in out):
    return out  # the learning rate explains everything else (NaN ratios, chance accuracy)
  fit = _fit_rules(records, thresholds)
  if any(d.name in ("flat", "linear") for d in out):
    # A learning rate too low explains low accuracy: not evidence of a model too small.
    fit = [d for d in fit if d.name != "underfitting"]
  out += fit + _ratio_rules(records, thresholds) + _unit_rules(records, thresholds)
  if not out:
    out = [Diagnosis("ok", "no problem detected by the playbook's rules (loss shape and noise, "
                     "validation loss and accuracy gap, update ratios, dead/saturated units "
                     "where recorded)")]
  return out


def verdict(history: Iterable[Mapping[str, Any]],
            thresholds: Thresholds = Thresholds()) -> list[str]:
  """The playbook's diagnoses as lines ``"<name>: <symptom>: <advice>"`` (see :func:`diagnose`)."""
  return [f"{d.name}: {d.message}" for d in diagnose(history, thresholds)]


VERDICT_FILE = "verdict.txt"


def write_verdict(workdir: str, history: Iterable[Mapping[str, Any]] | None = None,
                  thresholds: Thresholds = Thresholds()) -> list[str]:
  """Writes ``<workdir>/verdict.txt`` (one line per diagnosis) and returns the lines.

  ``history`` defaults to all of ``<workdir>/metrics.jsonl``, which also holds the batch losses,
  update ratios and unit statistics the richer rules need.
  """
  import os
  from research.monitor import writer as writer_lib
  if history is None:
    history = writer_lib.read_metrics(workdir)
  lines = verdict(history, thresholds)
  with open(os.path.join(workdir, VERDICT_FILE), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return lines
