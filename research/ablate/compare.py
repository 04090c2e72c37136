"""Compares finished, diverged and interrupted runs side by side, from their workdirs alone.

``read_run(workdir)`` takes what a run left: ``summary.json`` (status, config, best and last
records, test metrics of the best epoch, wall time), else ``config.json`` and the epoch rows of
``metrics.jsonl`` (a run killed before its summary: status ``incomplete``), and the first line of
``verdict.txt``. ``compare(runs)`` keeps the config fields that differ between the runs and, when
some runs differ only in the seed, groups them (every differing field but ``seed``) into one row
with mean ± sample std (ddof=1) over the seeds of every metric. Rows are sorted by one column.

Columns (:data:`METRICS`): ``best_val_accuracy`` (the selected parameters' best validation
accuracy), ``test_accuracy`` (test split at that best epoch), ``final_train_loss`` (mean training
loss of the last epoch), ``epochs`` (trained / asked), ``wall_time_s`` (vmapped members report the
wall time of the program they shared), ``status`` and ``verdict``.
"""
from __future__ import annotations

import csv
import json
import math
import os
import warnings
from typing import Any, NamedTuple, Sequence

import numpy as np

from research.monitor import records as records_lib
from research.monitor import writer as writer_lib

SEED = "seed"
#: Numeric columns, and whether a higher value is better (the default sort direction).
METRICS = {"best_val_accuracy": True, "test_accuracy": True, "final_train_loss": False,
           "epochs": True, "wall_time_s": False}
TEXT_COLUMNS = ("status", "verdict")
CURVES = ("val_accuracy", "val_loss")
BANDS = ("std", "minmax")
#: Files compare and ablate write next to the runs; a shell glob over the ablation picks them up.
OUTPUT_FILES = ("compare.csv", "compare_runs.csv", "compare.json", "compare.png",
                "ablation.json")
_RUN_FILES = ("summary.json", "config.json", "metrics.jsonl")
_MISSING = "-"


class Run(NamedTuple):
  """What one workdir tells about its run."""
  workdir: str
  status: str
  config: dict                  # flattened: {"optimizer.learning_rate": 0.001, ...}
  metrics: dict                 # METRICS keys -> float or None
  num_epochs: int | None
  verdict: str | None
  curves: dict                  # CURVES keys -> (epochs, values) arrays
  trained_as: dict | None


class Row(NamedTuple):
  """One line of the table: a run, or the runs that differ only in the seed."""
  fields: dict                  # the differing config fields (seed excluded when grouped)
  runs: list                    # [Run]
  stats: dict                   # metric -> (mean, std, n); std is None for n < 2


class Comparison(NamedTuple):
  differing: list[str]          # config fields that differ between the runs
  grouped: bool                 # True when some runs differ only in the seed
  sort: str
  rows: list[Row]


def _flatten(tree: Any, prefix: str = "") -> dict:
  if not isinstance(tree, dict):
    return {prefix.rstrip("."): tree}
  out: dict = {}
  for key, value in tree.items():
    out.update(_flatten(value, f"{prefix}{key}."))
  return out


def _normal(value: Any) -> Any:
  if isinstance(value, (list, tuple)):
    return tuple(_normal(v) for v in value)
  return value


def read_json(path: str) -> Any:
  """The JSON in ``path``, or None when it is missing or unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _number(value: Any) -> float | None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return float(value) if math.isfinite(value) else None


def is_run(workdir: str) -> bool:
  return os.path.isdir(workdir) and any(os.path.exists(os.path.join(workdir, name))
                                        for name in _RUN_FILES)


def read_run(workdir: str) -> Run:
  """The run in ``workdir`` (module docstring).

  Raises:
    ValueError: ``workdir`` holds no run (no summary.json, config.json or metrics.jsonl).
  """
  if not is_run(workdir):
    raise ValueError(f"{workdir} is not a run's workdir (it has none of "
                     f"{', '.join(_RUN_FILES)})")
  summary = read_json(os.path.join(workdir, "summary.json"))
  summary = summary if isinstance(summary, dict) else None
  config = (summary or {}).get("config") or read_json(os.path.join(workdir, "config.json")) or {}
  rows = writer_lib.epoch_records(writer_lib.read_metrics(workdir), "val_accuracy")
  curves = {key: records_lib.series(rows, key) for key in CURVES}
  train_epochs, train_losses = records_lib.series(rows, "train_loss")
  if summary is not None:
    best = _number(summary.get("best_val_accuracy"))
    last = summary.get("last") or {}
    metrics = {"best_val_accuracy": best if best is not None and best >= 0 else None,
               "test_accuracy": _number(summary.get("test_accuracy")),
               "final_train_loss": _number(last.get("train_loss")),
               "epochs": _number(summary.get("epochs")),
               "wall_time_s": _number(summary.get("wall_time_s"))}
    status = str(summary.get("status"))
  else:  # killed (or still running): what the epoch rows say
    accuracies = curves["val_accuracy"][1]
    finite = accuracies[np.isfinite(accuracies)]
    metrics = {"best_val_accuracy": float(finite.max()) if finite.size else None,
               "test_accuracy": None,
               "final_train_loss": _number(float(train_losses[-1])) if train_losses.size else None,
               "epochs": float(train_epochs.size), "wall_time_s": None}
    status = "incomplete"
  verdict = None
  try:
    with open(os.path.join(workdir, "verdict.txt"), encoding="utf-8") as f:
      verdict = f.readline().strip() or None
  except OSError:
    pass
  num_epochs = _flatten(config).get("train.num_epochs")
  return Run(os.path.abspath(workdir), status, {k: _normal(v) for k, v in _flatten(config).items()},
             metrics, int(num_epochs) if isinstance(num_epochs, int) else None, verdict, curves,
             (summary or {}).get("trained_as"))


def expand_paths(paths: Sequence[str]) -> list[str]:
  """The run workdirs named by ``paths``: an ablation's directory (it has ``ablation.json``)
  stands for its variants; the files compare and ablate write are skipped (a ``dir/*`` glob
  picks them up); repeated paths count once.

  Raises:
    ValueError: no path, a missing path, or a path that is neither a run nor an ablation.
  """
  if not paths:
    raise ValueError("no workdir given; e.g. compare.py runs/lr_init/*")
  out: list[str] = []
  for path in paths:
    absolute = os.path.abspath(path)
    if os.path.isfile(absolute) and os.path.basename(absolute) in OUTPUT_FILES:
      continue
    if not os.path.exists(absolute):
      raise ValueError(f"{path} does not exist")
    if not is_run(absolute) and os.path.isfile(os.path.join(absolute, "ablation.json")):
      found = sorted(os.path.join(absolute, name) for name in os.listdir(absolute)
                     if is_run(os.path.join(absolute, name)))
      if not found:
        raise ValueError(f"{path} is an ablation with no run yet")
      out.extend(found)
      continue
    if not is_run(absolute):
      raise ValueError(f"{path} is not a run's workdir (it has none of {', '.join(_RUN_FILES)})")
    out.append(absolute)
  return list(dict.fromkeys(out))


def differing_fields(runs: Sequence[Run]) -> list[str]:
  """Config fields whose values are not the same in every run (absent counts as a value)."""
  paths = sorted(set().union(*(r.config.keys() for r in runs)))
  return [p for p in paths
          if len({repr(r.config[p]) if p in r.config else "(absent)" for r in runs}) > 1]


def _stats(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
  finite = np.array([v for v in values if v is not None and math.isfinite(v)], np.float64)
  if finite.size == 0:
    return None, None, 0
  std = float(np.std(finite, ddof=1)) if finite.size > 1 else None
  return float(np.mean(finite)), std, int(finite.size)


def sort_columns(differing: Sequence[str]) -> list[str]:
  return list(METRICS) + [f for f in differing if f != SEED]


def compare(runs: Sequence[Run], sort: str = "best_val_accuracy") -> Comparison:
  """The table of ``runs`` (module docstring), sorted by ``sort``: a metric (higher accuracy
  first, lower loss and time first) or a differing config field (ascending); missing last.

  Raises:
    ValueError: no runs, or ``sort`` is not a column.
  """
  if not runs:
    raise ValueError("no run to compare")
  differing = differing_fields(runs)
  allowed = sort_columns(differing) + ([SEED] if SEED in differing else [])
  if sort not in allowed:
    raise ValueError(f"--sort={sort!r} is not a column; sort by one of {', '.join(allowed)}")
  keys = [f for f in differing if f != SEED]
  groups: dict[tuple, list[Run]] = {}
  for run in runs:
    groups.setdefault(tuple(repr(run.config.get(f)) for f in keys), []).append(run)
  grouped = any(len(g) > 1 for g in groups.values())
  if not grouped:
    keys, groups = differing, {(i,): [run] for i, run in enumerate(runs)}
  rows = []
  for members in groups.values():
    stats = {m: _stats([r.metrics[m] for r in members]) for m in METRICS}
    rows.append(Row({f: members[0].config.get(f, _MISSING) for f in keys}, members, stats))

  def order(row: Row):
    if sort in METRICS:
      mean = row.stats[sort][0]
      if mean is None:
        return (1, 0.0)
      return (0, -mean if METRICS[sort] else mean)
    value = row.fields.get(sort)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return (0, value)
    if isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value):
      return (1, value)   # (64,) before (128, 128)
    return (2, repr(value))

  return Comparison(differing, grouped, sort, sorted(rows, key=order))


# --- formatting --------------------------------------------------------------------------------

def _format_value(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, tuple):
    return "(" + ",".join(_format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  return str(value)


def _format_metric(metric: str, mean: float | None, std: float | None) -> str:
  if mean is None:
    return _MISSING
  spec, std_spec = {"best_val_accuracy": (".4f", ".4f"), "test_accuracy": (".4f", ".4f"),
                    "final_train_loss": (".4g", ".2g"), "epochs": ("g", ".2g"),
                    "wall_time_s": (".1f", ".1f")}[metric]
  text = format(mean, spec)
  return text if std is None else f"{text} ± {format(std, std_spec)}"


def _epochs_text(row: Row) -> str:
  done = sorted({int(r.metrics["epochs"]) for r in row.runs if r.metrics["epochs"] is not None})
  asked = sorted({r.num_epochs for r in row.runs if r.num_epochs is not None})
  trained = (_MISSING if not done else str(done[0]) if len(done) == 1
             else f"{done[0]}-{done[-1]}")
  return f"{trained}/{asked[-1]}" if asked else trained


def _counts(values: Sequence[str]) -> str:
  distinct = list(dict.fromkeys(values))
  if len(distinct) == 1:
    return distinct[0]
  return ", ".join(f"{values.count(v)} {v}" for v in distinct)


def _verdict_text(row: Row) -> str:
  """The verdict's first line; for seeds that disagree, how many got each diagnosis."""
  verdicts = [r.verdict or _MISSING for r in row.runs]
  if len(set(verdicts)) == 1:
    return verdicts[0]
  return _counts([v.split(":", 1)[0] for v in verdicts])


def table_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
  """``(header, rows)`` of the printed table (text cells)."""
  keys = list(comparison.rows[0].fields) if comparison.rows else []
  header = keys + (["runs"] if comparison.grouped else []) + [
      "best_val_accuracy", "test_accuracy", "final_train_loss", "epochs", "wall_time_s",
      "status", "verdict"]
  rows = []
  for row in comparison.rows:
    cells = [_format_value(row.fields[k]) for k in keys]
    if comparison.grouped:
      cells.append(str(len(row.runs)))
    for metric in ("best_val_accuracy", "test_accuracy", "final_train_loss"):
      cells.append(_format_metric(metric, *row.stats[metric][:2]))
    cells.append(_epochs_text(row))
    cells.append(_format_metric("wall_time_s", *row.stats["wall_time_s"][:2]))
    cells.append(_counts([r.status for r in row.runs]))
    cells.append(_verdict_text(row))
    rows.append(cells)
  return header, rows


def format_table(comparison: Comparison, verdict_width: int = 60) -> str:
  """The table as aligned text (the verdict cut to ``verdict_width`` characters)."""
  header, rows = table_rows(comparison)
  cut = lambda text: text if len(text) <= verdict_width else text[:verdict_width - 3] + "..."
  rows = [cells[:-1] + [cut(cells[-1])] for cells in rows]
  widths = [max(len(c) for c in column) for column in zip(header, *rows)]
  lines = ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
           for cells in [header] + rows]
  note = (f"{len(comparison.rows)} rows from "
          f"{sum(len(r.runs) for r in comparison.rows)} runs, sorted by {comparison.sort}")
  if comparison.grouped:
    note += "; runs that differ only in the seed are one row: mean ± std (ddof=1) over seeds"
  if not comparison.differing:
    note += "; the runs' configs are identical"
  return "\n".join(lines + [note])


def _json_value(value: Any) -> Any:
  if isinstance(value, tuple):
    return [_json_value(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def run_record(run: Run, differing: Sequence[str]) -> dict:
  """One run as a flat dict: its differing fields, metrics, status, verdict, workdir."""
  return {**{f: _json_value(run.config.get(f)) for f in differing}, **run.metrics,
          "num_epochs": run.num_epochs, "status": run.status, "verdict": run.verdict,
          "trained_as_members": (run.trained_as or {}).get("members"),
          "workdir": run.workdir}


def row_record(row: Row, comparison: Comparison) -> dict:
  """One table row as a flat dict (``<metric>_mean``, ``_std``, ``_n`` when grouped)."""
  record = {f: _json_value(v) for f, v in row.fields.items()}
  if comparison.grouped:
    record["runs"] = len(row.runs)
    for metric, (mean, std, n) in row.stats.items():
      record.update({f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_n": n})
  else:
    record.update(row.runs[0].metrics)
  record["epochs_text"] = _epochs_text(row)
  record["status"] = _counts([r.status for r in row.runs])
  record["verdict"] = _verdict_text(row)
  record["workdirs"] = [r.workdir for r in row.runs]
  return record


def _write_csv(path: str, records: Sequence[dict]) -> None:
  columns = list(dict.fromkeys(k for record in records for k in record))
  with open(path, "w", newline="") as f:
    out = csv.DictWriter(f, columns)
    out.writeheader()
    for record in records:
      out.writerow({k: (";".join(v) if k == "workdirs" else
                        json.dumps(v) if isinstance(v, list) else
                        "" if v is None else v) for k, v in record.items()})


def write_outputs(comparison: Comparison, out_dir: str) -> list[str]:
  """``compare.csv`` (the table), ``compare_runs.csv`` (one row per run) and ``compare.json``
  (both, with the differing fields and the sort) in ``out_dir``; their paths."""
  os.makedirs(out_dir, exist_ok=True)
  rows = [row_record(row, comparison) for row in comparison.rows]
  runs = [run_record(run, comparison.differing) for row in comparison.rows for run in row.runs]
  paths = [os.path.join(out_dir, name) for name in ("compare.csv", "compare_runs.csv",
                                                    "compare.json")]
  _write_csv(paths[0], rows)
  _write_csv(paths[1], runs)
  with open(paths[2], "w") as f:
    json.dump({"differing_fields": comparison.differing, "grouped_over_seeds": comparison.grouped,
               "sort": comparison.sort, "rows": rows, "runs": runs}, f, indent=2,
              allow_nan=False)
  return paths


# --- figure ------------------------------------------------------------------------------------

def _short_names(paths: Sequence[str]) -> dict[str, str]:
  """Each field's last component (``learning_rate``), or its whole path where two share it."""
  last = [p.split(".")[-1] for p in paths]
  return {p: (s if last.count(s) == 1 else p) for p, s in zip(paths, last)}


def _row_label(row: Row) -> str:
  short = _short_names(list(row.fields))
  label = ", ".join(f"{short[k]}={_format_value(v)}" for k, v in row.fields.items())
  return label or os.path.basename(row.runs[0].workdir)


def _band(curves: Sequence[tuple[np.ndarray, np.ndarray]], band: str):
  """``(epochs, centre, low, high, n)`` per epoch over the runs that reached it."""
  epochs = np.array(sorted(set().union(*(set(e.tolist()) for e, _ in curves))), np.float64)
  table = np.full((len(curves), epochs.size), np.nan)
  for i, (e, v) in enumerate(curves):
    table[i, np.searchsorted(epochs, e)] = v
  table[~np.isfinite(table)] = np.nan     # a diverged epoch's inf/NaN is not a point
  n = np.sum(np.isfinite(table), axis=0)
  with np.errstate(all="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)   # an epoch no run reached: NaN, not drawn
    centre = np.nanmean(table, axis=0)
    if band == "std":
      spread = np.where(n > 1, np.nanstd(table, axis=0, ddof=1), 0.0)
      low, high = centre - spread, centre + spread
    else:
      low, high = np.nanmin(table, axis=0), np.nanmax(table, axis=0)
  return epochs, centre, low, high, n


def figure(comparison: Comparison, path: str, band: str = "std") -> str:
  """Overlaid validation accuracy and loss vs epoch: one colour per row; a row of several seeds
  as its mean with a band (``band``: mean ± std, or min-max over the seeds); an ``x`` where a run
  ended diverged."""
  from matplotlib.figure import Figure
  if band not in BANDS:
    raise ValueError(f"--band={band!r} is unknown; known: {', '.join(BANDS)}")
  fig = Figure(figsize=(12.5, 4.6))
  axes = fig.subplots(1, 2)
  import matplotlib
  colors = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
  if len(comparison.rows) > len(colors):  # more variants than the default cycle: tab20
    colors = [matplotlib.colormaps["tab20"](i % 20) for i in range(len(comparison.rows))]
  for i, row in enumerate(comparison.rows):
    color = colors[i % len(colors)]
    label = _row_label(row) + (f" ({len(row.runs)} seeds)" if len(row.runs) > 1 else "")
    for ax, key in zip(axes, CURVES):
      curves = [r.curves[key] for r in row.runs if r.curves[key][0].size]
      if not curves:  # diverged (or killed) before its first epoch: in the legend all the same
        ax.plot([], [], color=color, lw=1.6, ls=":", label=f"{label}: no epoch finished")
        continue
      epochs, centre, low, high, _ = _band(curves, band)
      ax.plot(epochs, centre, color=color, lw=1.6, label=label, marker="." if epochs.size < 12
              else None)
      if len(curves) > 1:
        ax.fill_between(epochs, low, high, color=color, alpha=0.2, lw=0)
      for r in row.runs:
        if r.status == "diverged" and r.curves[key][0].size:
          ax.plot(r.curves[key][0][-1:], r.curves[key][1][-1:], "x", color=color, ms=9, mew=2)
  axes[0].set(title="validation accuracy", xlabel="epoch", ylabel="accuracy")
  axes[1].set(title="validation loss", xlabel="epoch", ylabel="loss")
  losses = np.concatenate([r.curves["val_loss"][1] for row in comparison.rows for r in row.runs]
                          + [np.array([])])
  losses = losses[np.isfinite(losses) & (losses > 0)]
  if losses.size and losses.max() > 10 * losses.min():  # an exploding run would flatten the rest
    axes[1].set_yscale("log")
    axes[1].set_ylabel("loss (log)")
  for ax in axes:
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
  spread = "mean ± std" if band == "std" else "min-max"
  title = (f"band: {spread} over seeds" if comparison.grouped else "one run per line")
  handles, labels = axes[0].get_legend_handles_labels()
  if any(r.status == "diverged" for row in comparison.rows for r in row.runs):
    title += "; x: diverged"
  if handles:
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title=title, title_fontsize=8, frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=110, bbox_inches="tight")
  return path
