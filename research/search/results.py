"""Reading a search back: the ranked table, the figures, and the best trial folders.

* :func:`collect` reads every stage's trials from the store (hyperparameters, state, validation
  accuracy, folder).
* :func:`ranked_table` formats them best first.
* :func:`plot_accuracy_vs_params`: validation accuracy against each hyperparameter on its own scale
  (log axis for ``log``; ``1 - x`` on a reversed log axis for ``one_minus_log``), one panel each,
  coloured by stage, failed trials as red crosses below the lowest accuracy (a learning-rate
  cliff shows), the configured range's edge bands shaded.
* :func:`write_csv`: every trial as a row of ``<search_dir>/trials.csv``.
* :func:`plot_loss_curves`: training and validation loss per epoch of the best trials.
* :func:`top_trials` ranks the trial folders on disk alone (no store needed): what the ensemble
  capability uses to build a top-k ensemble. A folder with an unreadable ``trial.json`` or a
  corrupt checkpoint is reported by :func:`scan_trials`, never fatal.
"""
from __future__ import annotations

import json
import math
import os
from typing import NamedTuple, Sequence

import optuna

from research.search import study as study_lib
from research.search import trials as trials_lib
from research.search.space import Space


class TrialRow(NamedTuple):
  """One trial of a search, as the report shows it."""
  stage: int
  number: int
  state: str                 # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
  value: float | None        # best validation accuracy (PRUNED: the last reported one)
  epochs: int                # epochs reported
  params: dict[str, float]
  workdir: str | None        # folder name under <search_dir>/trials
  fail_reason: str | None
  seed: int | None = None
  retry_of: int | None = None  # the trial (of the same stage) this one re-runs


def collect(storage: optuna.storages.BaseStorage, search_name: str, num_stages: int
            ) -> tuple[list[TrialRow], list[Space]]:
  """All trials of all stages, and each stage's space (stages not created yet are skipped)."""
  rows, spaces = [], []
  for stage in range(num_stages):
    study = study_lib.load(storage, study_lib.stage_study_name(search_name, stage))
    if study is None or "space" not in study.user_attrs:
      break
    spaces.append(Space.from_dict(study.user_attrs["space"]))
    for t in study.get_trials(deepcopy=False):
      params = dict(t.params) or dict(t.user_attrs.get("point", {}))
      workdir = t.user_attrs.get("workdir")
      if workdir is None and t.state.name == "FAIL":  # failed by the master: its folder's name
        workdir = trials_lib.final_name("FAIL", stage, t.number, None)
      rows.append(TrialRow(stage, t.number, t.state.name, t.value, len(t.intermediate_values),
                           params, workdir, t.user_attrs.get("fail_reason"),
                           t.user_attrs.get("seed"), t.user_attrs.get("retry_of")))
  return rows, spaces


#: The trials table written next to ``results.txt``.
CSV_FILE = "trials.csv"
#: Its columns (the hyperparameters go between ``epochs`` and ``seed``).
CSV_COLUMNS = ["stage", "trial", "state", "val_accuracy", "epochs", "seed", "retry_of", "folder",
               "fail_reason"]
#: The legend entry of failed trials in the accuracy figure.
FAILED_LABEL = "failed (diverged, crashed or worker died)"


def ranked(rows: Sequence[TrialRow], states: Sequence[str] = ("COMPLETE",)) -> list[TrialRow]:
  """Rows in ``states`` with a value, best validation accuracy first (ties: later stage first)."""
  keep = [r for r in rows if r.state in states and r.value is not None]
  return sorted(keep, key=lambda r: (-r.value, -r.stage, r.number))


def _fmt(value: float) -> str:
  return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e3 else f"{value:.4f}"


def ranked_table(rows: Sequence[TrialRow], names: Sequence[str], limit: int = 20) -> str:
  """A plain-text table of the finished trials, best first, then a count of the others."""
  best = ranked(rows)
  head = ["rank", "stage", "trial", "val_acc", "epochs"] + list(names) + ["folder"]
  lines = [head]
  for rank, r in enumerate(best[:limit], 1):
    lines.append([str(rank), str(r.stage), str(r.number), f"{r.value:.4f}", str(r.epochs)]
                 + [_fmt(r.params[n]) if n in r.params else "-" for n in names]
                 + [r.workdir or "-"])
  widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
  text = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines]
  states: dict[str, int] = {}
  for r in rows:
    states[r.state] = states.get(r.state, 0) + 1
  text.append(f"({len(rows)} trials: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
              + (f"; top {limit} shown" if len(best) > limit else "") + ")")
  return "\n".join(text)


def _axis_values(param, values):
  """What to plot for ``param``: ``1 - x`` for one_minus_log (on a log axis), else ``x``."""
  return [1.0 - v for v in values] if param.scale == "one_minus_log" else list(values)


def _failed_y(values: Sequence[float]) -> float:
  """Where failed trials go: a band just below the lowest accuracy shown."""
  if not values:
    return 0.0
  low, high = min(values), max(values)
  return low - 0.12 * max(high - low, 0.05)


def accuracy_figure(rows: Sequence[TrialRow], space: Space, border_fraction: float = 0.1):
  """The figure of :func:`plot_accuracy_vs_params` (a matplotlib ``Figure``): one panel per
  hyperparameter; finished trials as dots, pruned ones as crosses, coloured by stage; failed
  trials (diverged, crashed, dead worker) as red crosses in a band below the lowest accuracy, so
  that a learning-rate cliff shows; the configured range's edge bands shaded."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  done = ranked(rows, ("COMPLETE", "PRUNED"))
  failed = [r for r in rows if r.state == "FAIL"]
  stages = sorted({r.stage for r in done})
  y_failed = _failed_y([r.value for r in done])
  n = len(space)
  fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
  cmap = plt.get_cmap("viridis")
  for ax, param in zip(axes[0], space.params):
    for s in stages:
      color = cmap(s / max(1, len(stages) - 1)) if len(stages) > 1 else "C0"
      for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        pts = [r for r in done if r.stage == s and r.state == state and param.name in r.params]
        if pts:
          ax.scatter(_axis_values(param, [r.params[param.name] for r in pts]),
                     [r.value for r in pts], color=color, marker=marker, s=22, alpha=0.8,
                     label=f"stage {s}" + (" pruned" if state == "PRUNED" else ""))
    pts = [r for r in failed if param.name in r.params]
    if pts:
      ax.scatter(_axis_values(param, [r.params[param.name] for r in pts]), [y_failed] * len(pts),
                 color="red", marker="x", s=26, label=FAILED_LABEL)
      ax.axhline(y_failed, color="red", lw=0.5, alpha=0.3, zorder=0)
    # the edge bands of the configured range, where best values trigger a border warning
    for u0, u1 in ((0.0, border_fraction), (1.0 - border_fraction, 1.0)):
      lo, hi = _axis_values(param, [float(param.from_unit(u0)), float(param.from_unit(u1))])
      ax.axvspan(min(lo, hi), max(lo, hi), color="0.85", zorder=0)
    if param.scale != "linear":
      ax.set_xscale("log")
    if param.scale == "one_minus_log":
      ax.invert_xaxis()  # so that values of the parameter grow to the right
      ax.set_xlabel(f"1 - {param.name} (log scale)")
    else:
      ax.set_xlabel(f"{param.name} ({param.scale} scale)")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
  if axes[0][0].get_legend_handles_labels()[0]:
    axes[0][0].legend(fontsize=7, loc="lower left")
  fig.suptitle(f"validation accuracy against each hyperparameter (grey: outer "
               f"{border_fraction:.0%} of the range"
               + (f"; red x: {len(failed)} failed trials" if failed else "") + ")", fontsize=9)
  fig.tight_layout()
  return fig


def plot_accuracy_vs_params(rows: Sequence[TrialRow], space: Space, path: str,
                            border_fraction: float = 0.1) -> str:
  """Validation accuracy against each hyperparameter on its own scale (:func:`accuracy_figure`);
  returns ``path``."""
  import matplotlib.pyplot as plt
  fig = accuracy_figure(rows, space, border_fraction)
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


def write_csv(rows: Sequence[TrialRow], names: Sequence[str], path: str) -> str:
  """Every trial as one CSV row (stage, trial, state, val_accuracy, epochs, each
  hyperparameter, seed, retry_of, folder, fail_reason), by stage and trial number; returns
  ``path``. Values are written in full precision (``repr``), empty when absent."""
  import csv
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(CSV_COLUMNS[:5] + list(names) + CSV_COLUMNS[5:])
    for r in sorted(rows, key=lambda r: (r.stage, r.number)):
      writer.writerow([r.stage, r.number, r.state, "" if r.value is None else repr(r.value),
                       r.epochs] + [repr(r.params[n]) if n in r.params else "" for n in names]
                      + ["" if r.seed is None else r.seed,
                         "" if r.retry_of is None else r.retry_of, r.workdir or "",
                         (r.fail_reason or "").splitlines()[0] if r.fail_reason else ""])
  os.replace(tmp, path)
  return path


def read_history(workdir: str) -> list[dict]:
  """Per-epoch rows of a trial: ``trial.json``'s history, else ``metrics.jsonl``'s epoch rows."""
  trial_file = os.path.join(workdir, trials_lib.TRIAL_FILE)
  if os.path.exists(trial_file):
    with open(trial_file) as f:
      history = json.load(f).get("history") or []
    if history:
      return history
  rows = []
  metrics = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(metrics):
    with open(metrics) as f:
      for line in f:
        if line.strip():
          row = json.loads(line)
          if "val_accuracy" in row:
            rows.append(row)
  return rows


def plot_loss_curves(rows: Sequence[TrialRow], search_dir: str, path: str, k: int = 5) -> str:
  """Training (solid) and validation (dashed) loss per epoch of the ``k`` best trials."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
  for i, r in enumerate(ranked(rows)[:k]):
    if not r.workdir:
      continue
    history = read_history(os.path.join(search_dir, trials_lib.TRIALS_DIR, r.workdir))
    epochs = [h.get("epoch", j + 1) for j, h in enumerate(history)]
    label = f"#{i + 1} s{r.stage} t{r.number} ({r.value:.4f})"
    for key, style, ax in (("train_loss", "-", ax_loss), ("val_loss", "--", ax_loss),
                           ("val_accuracy", "-", ax_acc)):
      ys = [h.get(key) for h in history]
      if any(y is not None and math.isfinite(float(y)) for y in ys):
        ax.plot(epochs, [float("nan") if y is None else float(y) for y in ys], style,
                color=f"C{i}", marker=".", label=label if key != "val_loss" else None)
  ax_loss.set_yscale("log")
  ax_loss.set_xlabel("epoch")
  ax_loss.set_ylabel("loss (solid: train, dashed: validation)")
  ax_acc.set_xlabel("epoch")
  ax_acc.set_ylabel("validation accuracy")
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
  if ax_acc.get_legend_handles_labels()[0]:
    ax_acc.legend(fontsize=7)
  fig.suptitle(f"the {k} best trials", fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path


class TrialDir(NamedTuple):
  """A trial folder as found on disk."""
  path: str
  state: str
  best_val_accuracy: float | None
  stage: int
  number: int


def _check_checkpoints(path: str) -> str | None:
  """A problem with the trial's checkpoint files (unreadable JSON metadata), or None."""
  root = os.path.join(path, "checkpoints")
  for folder, _, files in os.walk(root):
    for name in files:
      if name.endswith((".json",)) or name in ("_CHECKPOINT_METADATA", "_METADATA"):
        try:
          with open(os.path.join(folder, name)) as f:
            json.load(f)
        except (OSError, ValueError) as err:
          return f"corrupt checkpoint file {os.path.join(folder, name)}: {err}"
  return None


def scan_trials(search_dir: str, *, check_checkpoints: bool = True
                ) -> tuple[list[TrialDir], list[str]]:
  """Every trial folder under ``<search_dir>/trials`` and the problems found (never raises)."""
  root = os.path.join(search_dir, trials_lib.TRIALS_DIR)
  found, problems = [], []
  if not os.path.isdir(root):
    return found, [f"{root} does not exist: no trial has started."]
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    if not os.path.isdir(path):
      continue
    try:
      with open(os.path.join(path, trials_lib.TRIAL_FILE)) as f:
        info = json.load(f)
      accuracy = info.get("best_val_accuracy")
      found.append(TrialDir(os.path.abspath(path), str(info.get("state", "UNKNOWN")),
                            None if accuracy is None else float(accuracy),
                            int(info.get("stage", -1)), int(info.get("number", -1))))
    except (OSError, ValueError, TypeError) as err:
      problems.append(f"{path}: unreadable {trials_lib.TRIAL_FILE} ({err}); skipped.")
      continue
    if check_checkpoints:
      problem = _check_checkpoints(path)
      if problem:
        problems.append(f"{path}: {problem}; skipped.")
        found.pop()
  return found, problems


def top_trials(search_dir: str, k: int) -> list[str]:
  """The folders of the ``k`` best finished trials of a search, best validation accuracy first.

  Reads only ``<search_dir>/trials/*/trial.json`` (no store). Folders with problems (unreadable
  ``trial.json``, corrupt checkpoint files) are skipped with a warning.

  Raises:
    ValueError: ``k < 1``.
  """
  if int(k) < 1:
    raise ValueError(f"k={k!r} must be >= 1.")
  found, problems = scan_trials(search_dir)
  for problem in problems:
    import warnings
    warnings.warn(problem, RuntimeWarning, stacklevel=2)
  done = [t for t in found if t.state == "COMPLETE" and t.best_val_accuracy is not None]
  done.sort(key=lambda t: (-t.best_val_accuracy, -t.stage, t.number))
  return [t.path for t in done[:int(k)]]
