"""The per-epoch progress line: loss, accuracies, time and ETA."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping


def _format_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = max(0.0, seconds)
  if seconds < 60:
    return f"{seconds:.1f}s"
  minutes, secs = divmod(int(round(seconds)), 60)
  if minutes < 60:
    return f"{minutes}m{secs:02d}s"
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m"


def _format_value(value: Any) -> str:
  value = float(value)
  if not math.isfinite(value):
    return str(value)
  if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
    return f"{value:.3e}"
  return f"{value:.4f}"


class ProgressLine:
  """Formats one line per epoch; the ETA assumes the remaining epochs take the mean time of the
  epochs after the first one of this process (which also pays for compilation).

  ``epoch`` is the 0-based index of the epoch that just finished (so ``epoch + 1`` are done)::

    progress = ProgressLine(num_epochs=30)
    print(progress(epoch, {'train_loss': 0.31, 'train_accuracy': 0.91, 'val_loss': 0.35,
                           'val_accuracy': 0.90}))
    # epoch   1/30  train_loss 0.3100  train_acc 91.00%  val_loss 0.3500  val_acc 90.00%
    #   lr 1.000e-03  time 1.2s  eta 34.8s

  Elapsed time runs from construction (or the last :meth:`reset`); tests inject ``clock``.
  Accuracies are printed as percentages; other keys are printed only when named in
  ``extra_keys`` (so a metrics dict full of per-layer statistics still gives one short line).
  """

  # (metric key, label, is percentage) in print order.
  KNOWN = (("train_loss", "train_loss", False), ("train_accuracy", "train_acc", True),
           ("val_loss", "val_loss", False), ("val_accuracy", "val_acc", True),
           ("learning_rate", "lr", False))

  def __init__(self, num_epochs: int, clock: Callable[[], float] = time.monotonic,
               start_epoch: int = 0, extra_keys: tuple[str, ...] = ()):
    """``start_epoch``: epochs already done before this process started (resumed runs)."""
    if num_epochs < 1:
      raise ValueError(f"num_epochs must be >= 1, got num_epochs={num_epochs!r}")
    self.num_epochs = int(num_epochs)
    self._clock = clock
    self._start_epoch = int(start_epoch)
    self._start = clock()
    self._first_epoch_end: float | None = None
    self.extra_keys = tuple(extra_keys)

  def reset(self, start_epoch: int = 0) -> None:
    self._start_epoch = int(start_epoch)
    self._start = self._clock()
    self._first_epoch_end = None

  def __call__(self, epoch: int, metrics: Mapping[str, Any]) -> str:
    return self.format(epoch, metrics)

  def format(self, epoch: int, metrics: Mapping[str, Any]) -> str:
    """The line for the end of epoch ``epoch`` (0-based) with the given metrics."""
    done = int(epoch) + 1
    width = len(str(self.num_epochs))
    parts = [f"epoch {done:>{width}}/{self.num_epochs}"]
    for key, label, percent in self.KNOWN:
      if key in metrics:
        value = float(metrics[key])
        if percent and math.isfinite(value):
          parts.append(f"{label} {value:.2%}")
        elif key == "learning_rate":
          parts.append(f"{label} {value:.2e}")
        else:
          parts.append(f"{label} {_format_value(value)}")
    for key in self.extra_keys:
      if key in metrics:
        parts.append(f"{key} {_format_value(metrics[key])}")
    now = self._clock()
    elapsed = now - self._start
    done_here = done - self._start_epoch
    remaining = self.num_epochs - done
    if done_here == 1:
      self._first_epoch_end = now
    # The first epoch of a process also pays for compilation: from the second one on, the ETA
    # is the mean time of the epochs after it.
    if done_here > 1 and self._first_epoch_end is not None:
      per_epoch = (now - self._first_epoch_end) / (done_here - 1)
    else:
      per_epoch = elapsed / done_here if done_here > 0 else float("nan")
    eta = per_epoch * remaining
    parts.append(f"time {_format_duration(elapsed)}")
    parts.append(f"eta {_format_duration(eta if remaining > 0 else 0.0)}")
    return "  ".join(parts)
