"""Evaluating an ensemble for the report: per-member and cumulative (1..K) metrics on validation
and test, the evaluation cost relative to one model, a table and the accuracy-vs-K figure."""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from research.ensemble import combine
from research.ensemble.members import Member, member_logits, time_evaluation


def evaluate_members(members: Sequence[Member], dataset, batch_size: int = 512,
                     timing_repeats: int = 5) -> dict:
  """Metrics of one ensemble (members in order) on the validation and test splits.

  Returns a JSON-serialisable dict with ``members`` (name, info, val/test accuracy and NLL),
  ``curve`` ({'val': [...], 'test': [...]}, the ensemble of the first k members for k = 1..K),
  and ``cost`` (seconds for one model, the K members vmapped, lax.mapped in one program, and
  one after another, with the ratios to one model; ``timing_repeats = 0`` skips the timing).
  """
  out = {"members": [], "curve": {}, "cost": {}}
  per_split = {}
  for split in ("val", "test"):
    x, y = getattr(dataset, f"x_{split}"), np.asarray(getattr(dataset, f"y_{split}"))
    logits = member_logits(members, x, batch_size)
    per_split[split] = combine.member_metrics(logits, y)
    out["curve"][split] = combine.cumulative_metrics(logits, y)
  for i, member in enumerate(members):
    row = {"name": member.name, "info": _jsonable(member.info)}
    for split in ("val", "test"):
      row[f"{split}_accuracy"] = per_split[split][i]["accuracy"]
      row[f"{split}_nll"] = per_split[split][i]["nll"]
    out["members"].append(row)
  if timing_repeats > 0:
    x = dataset.x_test
    one = time_evaluation(members[:1], x, batch_size, repeats=timing_repeats)
    vmapped = time_evaluation(members, x, batch_size, "vmap", timing_repeats)
    mapped = time_evaluation(members, x, batch_size, "map", timing_repeats)
    looped = time_evaluation(members, x, batch_size, "loop", timing_repeats)
    out["cost"] = {"one_model_s": one, "vmapped_s": vmapped, "mapped_s": mapped,
                   "sequential_s": looped, "vmapped_vs_one": vmapped / one,
                   "mapped_vs_one": mapped / one, "sequential_vs_one": looped / one,
                   "k": len(members)}
  return out


def _jsonable(value):
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.generic, np.ndarray)):
    return value.tolist()
  return value


def format_report(results: dict[str, dict]) -> str:
  """A plain-text table per ensemble kind: members, the 1..K curve and the cost."""
  lines = []
  for kind, res in results.items():
    lines.append(f"== {kind} ==")
    lines.append(f"{'member':<34}{'val acc':>9}{'test acc':>10}")
    for row in res["members"]:
      lines.append(f"{row['name'][:33]:<34}{row['val_accuracy']:>9.4f}{row['test_accuracy']:>10.4f}")
    lines.append(f"{'ensemble of first k':<34}{'val acc':>9}{'test acc':>10}{'val nll':>9}"
                 f"{'test nll':>10}")
    for v, t in zip(res["curve"]["val"], res["curve"]["test"]):
      lines.append(f"{'k=' + str(v['k']):<34}{v['accuracy']:>9.4f}{t['accuracy']:>10.4f}"
                   f"{v['nll']:>9.4f}{t['nll']:>10.4f}")
    cost = res.get("cost")
    if cost:
      lines.append(f"evaluation cost of K={cost['k']} relative to one model: vmapped "
                   f"{cost['vmapped_vs_one']:.2f}x, lax.map {cost['mapped_vs_one']:.2f}x, "
                   f"sequential {cost['sequential_vs_one']:.2f}x "
                   f"(one model {cost['one_model_s'] * 1e3:.2f} ms on the test split)")
    lines.append("")
  return "\n".join(lines)


def accuracy_vs_k_figure(results: dict[str, dict], path: str, title: str = "") -> str:
  """Writes a PNG: ensemble accuracy against the number of members k, one line per kind,
  validation (dashed) and test (solid); returns the path."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for i, (kind, res) in enumerate(results.items()):
    color = f"C{i}"
    for split, style in (("test", "-"), ("val", "--")):
      curve = res["curve"][split]
      ax.plot([c["k"] for c in curve], [100 * c["accuracy"] for c in curve], style, marker="o",
              ms=3, color=color, label=f"{kind} ({split})")
  ax.set_xlabel("members in the ensemble (k)")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(title or "ensemble accuracy against the number of members")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_json(obj, path: str) -> None:
  """Writes ``obj`` as indented JSON (numpy values converted)."""
  with open(path, "w") as f:
    json.dump(_jsonable(obj), f, indent=1)
