"""Evaluating an ensemble for the report: per-member and cumulative (1..K) metrics on validation
and test, the evaluation cost relative to one model, a table and the accuracy-vs-K figure."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Sequence

import numpy as np

from research.ensemble import combine
from research.ensemble.members import Member, member_logits, prepare, run_prepared


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
    out["cost"] = time_ensemble(members, dataset.x_test, batch_size, timing_repeats)
  return out


def time_ensemble(members: Sequence[Member], x, batch_size: int = 512, repeats: int = 5) -> dict:
  """Seconds to evaluate one model, the K members vmapped, lax.mapped in one program, and one
  after another, with the ratios to one model.

  Every program is compiled and run once before any clock starts, and the four are then timed
  in interleaved rounds (one, vmap, map, loop, one, ...), the median of ``repeats`` rounds each:
  machine noise and cache state hit all four alike instead of whichever section ran first.
  """
  prepared = {"one": prepare(members[:1], "vmap"), "vmapped": prepare(members, "vmap"),
              "mapped": prepare(members, "map"), "sequential": prepare(members, "loop")}
  for plan in prepared.values():   # warm-up: compile and touch every buffer
    run_prepared(plan, x, batch_size)
  times: dict[str, list[float]] = {name: [] for name in prepared}
  for _ in range(int(repeats)):
    for name, plan in prepared.items():
      start = time.perf_counter()
      run_prepared(plan, x, batch_size)
      times[name].append(time.perf_counter() - start)
  median = {name: float(np.median(t)) for name, t in times.items()}
  one = median["one"]
  return {"one_model_s": one, "vmapped_s": median["vmapped"], "mapped_s": median["mapped"],
          "sequential_s": median["sequential"], "vmapped_vs_one": median["vmapped"] / one,
          "mapped_vs_one": median["mapped"] / one,
          "sequential_vs_one": median["sequential"] / one, "k": len(members),
          "spread_s": {name: [float(min(t)), float(max(t))] for name, t in times.items()}}


def _jsonable(value):
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.generic, np.ndarray)):
    return _jsonable(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return None   # JSON has no NaN: a bare NaN makes the file unreadable to strict parsers
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
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for i, (kind, res) in enumerate(results.items()):
    color = f"C{i}"
    for split, style in (("test", "-"), ("val", "--")):
      curve = res["curve"][split]
      accuracy = np.array([c["accuracy"] for c in curve])
      n = np.array([c.get("n", 0) for c in curve], np.float64)
      # One standard error of a measured accuracy, sqrt(p (1 - p) / n): what a single extra
      # right or wrong example (1/n) is worth next to the differences between k.
      error = np.where(n > 0, np.sqrt(accuracy * (1 - accuracy) / np.maximum(n, 1)), 0.0)
      ax.errorbar([c["k"] for c in curve], 100 * accuracy, yerr=100 * error, fmt=style,
                  marker="o", ms=3, capsize=2, color=color, label=f"{kind} ({split})")
  ax.set_xlabel("members in the ensemble (k)")
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.set_ylabel("accuracy (%)")
  ax.set_title(title or "ensemble accuracy against the number of members")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2, title="bars: 1 standard error of the accuracy",
            title_fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_json(obj, path: str) -> None:
  """Writes ``obj`` as indented, strictly valid JSON (numpy values converted, NaN/Inf as null)."""
  with open(path, "w") as f:
    json.dump(_jsonable(obj), f, indent=1, allow_nan=False)


def _mean_std(values) -> dict:
  values = np.asarray(values, np.float64)
  return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": int(values.size)}


def aggregate(outs: Sequence[dict]) -> dict:
  """Mean and std over repeated studies (each the dict written to ensemble.json): the 1..K curve
  of every kind, the single-model rows (best/final/EMA/Polyak), and the distillation accuracies
  (gain kept computed from the mean accuracies, and the mean of the per-repeat values)."""
  summary: dict = {"repeats": len(outs), "curves": {}, "single_models": {}, "distillation": {},
                   "cost": {}}
  kinds = [k for k in outs[0].get("ensembles", {}) if all(k in o["ensembles"] for o in outs)]
  for kind in kinds:
    summary["curves"][kind] = {}
    for split in ("val", "test"):
      num = min(len(o["ensembles"][kind]["curve"][split]) for o in outs)
      summary["curves"][kind][split] = [
          {"k": i + 1, **_mean_std([o["ensembles"][kind]["curve"][split][i]["accuracy"]
                                    for o in outs])} for i in range(num)]
    costs = [o["ensembles"][kind].get("cost") for o in outs]
    if all(costs):
      summary["cost"][kind] = {key: _mean_std([c[key] for c in costs])
                               for key in costs[0] if key.endswith("_vs_one")}
  if all("single_models" in o for o in outs):
    for which in outs[0]["single_models"]:
      summary["single_models"][which] = {
          split: _mean_std([a for o in outs for a in o["single_models"][which][split]["all"]])
          for split in ("val", "test")}
  if all("distillation" in o for o in outs):
    from research.ensemble.distill import gain_kept
    for split in ("val", "test"):
      rows = [o["distillation"][split] for o in outs]
      agg = {key: _mean_std([r[key] for r in rows])
             for key in ("single", "ensemble", "student", "hard_label_student")}
      agg["gain_kept_of_means"] = gain_kept(agg["student"]["mean"], agg["single"]["mean"],
                                            agg["ensemble"]["mean"])
      agg["gain_kept_vs_baseline_of_means"] = gain_kept(
          agg["student"]["mean"], agg["hard_label_student"]["mean"], agg["ensemble"]["mean"])
      agg["gain_kept_per_repeat"] = [r["gain_kept"] for r in rows]
      summary["distillation"][split] = agg
  return summary


def _ratio(value) -> str:
  return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}"


def format_summary(summary: dict) -> str:
  """Text tables of :func:`aggregate`'s result (accuracies in %, mean +- std over repeats)."""
  n = summary["repeats"]
  lines = [f"mean +- std over {n} repeats (accuracy %)"]
  if summary["single_models"]:
    lines.append("single models (all seeds of all repeats):")
    for which, row in summary["single_models"].items():
      lines.append(f"  {which:<8} val {100 * row['val']['mean']:6.2f} +- "
                   f"{100 * row['val']['std']:.2f}   test {100 * row['test']['mean']:6.2f} +- "
                   f"{100 * row['test']['std']:.2f}   (n={row['test']['n']})")
  for kind, curve in summary["curves"].items():
    lines.append(f"{kind}: ensemble of the first k members")
    lines.append(f"  {'k':>3} {'val':>16} {'test':>16}")
    for v, t in zip(curve["val"], curve["test"]):
      lines.append(f"  {v['k']:>3} {100 * v['mean']:9.2f} +- {100 * v['std']:4.2f} "
                   f"{100 * t['mean']:9.2f} +- {100 * t['std']:4.2f}")
    cost = summary["cost"].get(kind)
    if cost:
      lines.append("  evaluation cost vs one model: " + ", ".join(
          f"{key[:-7]} {c['mean']:.2f}x" for key, c in cost.items()))
  for split, agg in summary["distillation"].items():
    lines.append(f"distillation, {split}: " + ", ".join(
        f"{key} {100 * agg[key]['mean']:.2f} +- {100 * agg[key]['std']:.2f}"
        for key in ("single", "ensemble", "student", "hard_label_student")))
    cells = [_ratio(agg["gain_kept_of_means"]), _ratio(agg["gain_kept_vs_baseline_of_means"]),
             *(_ratio(g) for g in agg["gain_kept_per_repeat"])]
    lines.append(f"  gain kept (from mean accuracies): {cells[0]} (vs hard-label student "
                 f"{cells[1]}); per repeat: {', '.join(cells[2:])}"
                 + (" (n/a: the ensemble gains nothing over the single model)"
                    if "n/a" in cells else ""))
  return "\n".join(lines) + "\n"


def mean_accuracy_vs_k_figure(summary: dict, path: str, title: str = "") -> str:
  """PNG of :func:`aggregate`'s curves: test accuracy (mean +- std over repeats) against k, one
  line per kind, with the single-model means (best, EMA, Polyak) as horizontal references."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
  for ax, split in zip(axes, ("val", "test")):
    for i, (kind, curve) in enumerate(summary["curves"].items()):
      ks = [c["k"] for c in curve[split]]
      ax.errorbar(ks, [100 * c["mean"] for c in curve[split]],
                  yerr=[100 * c["std"] for c in curve[split]], marker="o", ms=3, capsize=2,
                  color=f"C{i}", label=kind)
    for j, (which, row) in enumerate(summary["single_models"].items()):
      ax.axhline(100 * row[split]["mean"], ls=":", color=f"C{j + 5}", label=f"single ({which})")
    dist = summary["distillation"].get(split)
    if dist:
      ax.axhline(100 * dist["student"]["mean"], ls="-.", color="k", label="distilled student")
    ax.set_xlabel("members in the ensemble (k)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{split}")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("accuracy (%)")
  axes[1].legend(fontsize=7)
  fig.suptitle(title or "ensemble accuracy against the number of members")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
