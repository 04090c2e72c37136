"""The end-of-run verdict, in the playbook's terms (CS231n "Babysitting the learning process").

``verdict(history)`` reads per-epoch records (``train_loss``, ``train_accuracy``, ``val_loss``,
``val_accuracy``) and, when present, the per-batch losses (``batch_loss``), the sampled update
ratios (``update_ratio/<leaf>``) and the activation statistics (``act_i/dead_fraction``,
``act_i/saturated_fraction``). ``history`` may be ``TrainResult.history`` or all the records of
``metrics.jsonl`` (``research.monitor.read_metrics(workdir)``), which carry every key.

Rules (each a :class:`Diagnosis` with a short ``name``; thresholds in :class:`Thresholds`):

=====================  ======================================================  ===============================
name                   symptom                                                 advice
=====================  ======================================================  ===============================
``diverged``           NaN/Inf loss                                            learning rate too high
``exploding``          final loss > ``explode_factor`` x initial loss          learning rate too high
``flat``               loss fell by < ``flat_drop`` of its initial value        learning rate too low (or a bug)
``linear``             epoch losses fall on a straight line (R^2 high)         learning rate too low
``plateau``            fast early drop, then flat at a high loss               decay the learning rate
``noisy``              batch-to-batch wiggle large vs the loss decrease        batch too small
``overfitting``        train - val accuracy > ``overfit_gap``                  more regularization / data
``underfitting``       train ~ val, both low, loss no longer falling           model too small: more capacity
``update_ratio``       median ||update||/||w|| of a kernel far from 1e-3        learning rate too low/high
``dead_relu``          > ``dead_fraction`` of a layer's relus never fire        init (He) / lower learning rate
``saturated``          > ``saturated_fraction`` of tanh/sigmoid saturated       init scale (Xavier) / inputs
``ok``                 none of the above                                        --
=====================  ======================================================  ===============================
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

from research.monitor import records as records_lib

TARGET_UPDATE_RATIO = 1e-3


class Thresholds(NamedTuple):
  """Where each rule fires; defaults are the playbook's rough numbers, tuned on digits runs."""
  explode_factor: float = 1.5      # final loss / initial loss
  flat_drop: float = 0.05          # (initial - final) / initial below this: flat
  linear_r2: float = 0.98          # R^2 of a straight-line fit to the epoch losses
  linear_min_epochs: int = 5
  plateau_early_fraction: float = 0.8  # share of the total drop done in the first quarter
  plateau_late_change: float = 0.02    # relative change over the second half
  plateau_high_loss: float = 0.25      # final / initial loss still above this
  # Detrended within-epoch batch-loss std / total loss decrease. Digits MLP + Adam: batch 64 ->
  # 0.014, 16 -> 0.022, 4 -> 0.065, 1 -> 0.48.
  noise_ratio: float = 0.15
  overfit_gap: float = 0.05        # train - val accuracy
  underfit_gap: float = 0.02
  underfit_accuracy: float = 0.95
  underfit_plateau: float = 0.1    # and the loss fell < 10% over the last 3 epochs
  ratio_low: float = 1e-4          # update/weight ratio band around 1e-3
  ratio_high: float = 1e-2
  dead_fraction: float = 0.5
  saturated_fraction: float = 0.5


class Diagnosis(NamedTuple):
  name: str
  message: str


def ratio_advice(ratio: float, low: float = Thresholds().ratio_low,
                 high: float = Thresholds().ratio_high) -> str | None:
  """Advice when an update/weight ratio is far from the playbook's ~1e-3, else None.

  ``ratio < low`` (default 1e-4): "learning rate likely too low"; ``ratio > high`` (default 1e-2)
  or non-finite: "learning rate likely too high".
  """
  ratio = float(ratio)
  if not math.isfinite(ratio) or ratio > high:
    return f"learning rate likely too high (update/weight ratio {ratio:.1e}, want ~1e-3)"
  if ratio < low:
    return f"learning rate likely too low (update/weight ratio {ratio:.1e}, want ~1e-3)"
  return None


def _finite(values: np.ndarray) -> np.ndarray:
  return values[np.isfinite(values)]


def _loss_rules(records: list[Mapping[str, Any]], t: Thresholds) -> list[Diagnosis]:
  epochs, losses = records_lib.series(records, "train_loss")
  _, batch = records_lib.series(records, "batch_loss")
  out = []
  if (losses.size and not np.all(np.isfinite(losses))) or (batch.size and not np.all(np.isfinite(batch))):
    where = epochs[~np.isfinite(losses)] if losses.size else np.array([])
    at = f" (first at epoch {where[0]:g})" if where.size else ""
    out.append(Diagnosis("diverged", f"loss is NaN/Inf{at}: learning rate too high "
                         "(lower it 3-10x), or check the data and loss for log(0)/division by 0"))
    return out
  if losses.size < 2:
    return out
  initial = float(batch[0]) if batch.size else float(losses[0])
  final = float(losses[-1])
  if initial <= 0:
    return out
  if final > t.explode_factor * initial:
    out.append(Diagnosis("exploding", f"loss grew from {initial:.3g} to {final:.3g}: learning "
                         "rate too high (lower it 3-10x)"))
    return out
  drop = (initial - final) / initial
  if drop < t.flat_drop:
    out.append(Diagnosis("flat", f"loss barely moved ({initial:.3g} -> {final:.3g}, "
                         f"{drop:.1%}): learning rate too low (raise it 3-10x), or check "
                         "gradients (scripts/gradcheck.py) and that the data has labels"))
    return out
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
  per_epoch = records_lib.batch_losses_by_epoch(records)
  wiggle = []
  for chunk in per_epoch:
    if chunk.size >= 4:
      trend = np.polyval(np.polyfit(np.arange(chunk.size), chunk, 1), np.arange(chunk.size))
      wiggle.append(np.std(chunk - trend))
  decrease = initial - float(np.min(losses))
  if wiggle and decrease > 0:
    noise = float(np.median(wiggle)) / decrease
    if noise > t.noise_ratio:
      out.append(Diagnosis("noisy", f"loss is noisy across batches (batch-to-batch std "
                           f"{np.median(wiggle):.3g} = {noise:.0%} of the decrease): batch size "
                           "likely too small (raise config.train.batch_size), or lower the "
                           "learning rate"))
  return out


def _accuracy_rules(records: list[Mapping[str, Any]], t: Thresholds) -> list[Diagnosis]:
  epochs, train = records_lib.series(records, "train_accuracy")
  val_epochs, val = records_lib.series(records, "val_accuracy")
  if train.size == 0 or val.size == 0:
    return []
  common = np.intersect1d(epochs, val_epochs)
  if common.size == 0:
    return []
  train_at = dict(zip(epochs, train))
  val_at = dict(zip(val_epochs, val))
  last = common[-3:]
  tr = float(np.mean([train_at[e] for e in last]))
  va = float(np.mean([val_at[e] for e in last]))
  if not (math.isfinite(tr) and math.isfinite(va)):
    return []
  gap = tr - va
  best_epoch = val_epochs[int(np.nanargmax(val))]
  if gap > t.overfit_gap:
    stop = (f"; validation accuracy peaked at epoch {best_epoch:g}"
            if best_epoch < val_epochs[-1] else "")
    return [Diagnosis("overfitting", f"train accuracy {tr:.1%} vs validation "
                      f"{va:.1%} (gap {100 * gap:.1f} points, last 3 epochs): raise regularization (config.loss.l2 / "
                      "optimizer.weight_decay, model.dropout), get more data, or stop "
                      f"earlier{stop}")]
  _, losses = records_lib.series(records, "train_loss")
  still_improving = (losses.size >= 3 and losses[-3] > 0
                     and (losses[-3] - losses[-1]) / losses[-3] >= t.underfit_plateau)
  if abs(gap) < t.underfit_gap and tr < t.underfit_accuracy and not still_improving:
    return [Diagnosis("underfitting", f"train ({tr:.1%}) and validation ({va:.1%}) accuracy "
                      "track each other and are both low: model likely too small: increase "
                      "capacity (wider/deeper layers), or train longer")]
  return []


def _ratio_rules(records: list[Mapping[str, Any]], t: Thresholds) -> list[Diagnosis]:
  keys = records_lib.keys_with_prefix(records, "update_ratio/")
  kernels = [k for k in keys if k.endswith("kernel")] or keys
  out = []
  for key in kernels:
    _, values = records_lib.series(records, key)
    if values.size == 0:
      continue
    finite = _finite(values)
    median = float(np.median(finite)) if finite.size == values.size else float("nan")
    advice = ratio_advice(median, t.ratio_low, t.ratio_high)
    if advice:
      out.append(Diagnosis("update_ratio", f"{key[len('update_ratio/'):]}: {advice}"))
  return out


def _unit_rules(records: list[Mapping[str, Any]], t: Thresholds) -> list[Diagnosis]:
  out = []
  for key in records_lib.keys_with_suffix(records, "/dead_fraction"):
    _, values = records_lib.series(records, key)
    if values.size and values[-1] > t.dead_fraction:
      out.append(Diagnosis("dead_relu", f"{key.split('/')[0]}: {values[-1]:.0%} of the ReLUs "
                           "never fire on a batch (dead): use He initialization, lower the "
                           "learning rate, or try batch norm"))
  for key in records_lib.keys_with_suffix(records, "/saturated_fraction"):
    _, values = records_lib.series(records, key)
    if values.size and values[-1] > t.saturated_fraction:
      out.append(Diagnosis("saturated", f"{key.split('/')[0]}: {values[-1]:.0%} of the "
                           "tanh/sigmoid outputs are saturated (gradients vanish): use Xavier "
                           "initialization (smaller weights), standardize the inputs, or use "
                           "relu / batch norm"))
  return out


def diagnose(history: Iterable[Mapping[str, Any]],
             thresholds: Thresholds = Thresholds()) -> list[Diagnosis]:
  """All diagnoses for a run (see the module docstring); ``[Diagnosis('ok', ...)]`` if none."""
  records = [r for r in history]
  out = _loss_rules(records, thresholds)
  if any(d.name in ("diverged", "exploding") for d in out):
    return out  # the learning rate explains everything else (NaN ratios, chance accuracy)
  out += (_accuracy_rules(records, thresholds) + _ratio_rules(records, thresholds)
          + _unit_rules(records, thresholds))
  if not out:
    out = [Diagnosis("ok", "no problem detected by the playbook's rules (loss, accuracy gap, "
                     "update ratios, dead/saturated units where recorded)")]
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
  import os  # pylint: disable=g-import-not-at-top
  from research.monitor import writer as writer_lib  # pylint: disable=g-import-not-at-top
  if history is None:
    history = writer_lib.read_metrics(workdir)
  lines = verdict(history, thresholds)
  with open(os.path.join(workdir, VERDICT_FILE), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return lines
