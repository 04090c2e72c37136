r"""Ensembles of every kind, their accuracy against K, and distillation into one student.

    python3 scripts/ensemble.py --config=configs/ensemble_digits.py --workdir=/tmp/ens_digits
    python3 scripts/ensemble.py --config=configs/ensemble_digits.py --workdir=/tmp/ens \
        --config.ensemble.kinds=topk --config.ensemble.workdirs=/tmp/search_dir

Kinds (``config.ensemble.kinds``, comma-separated):
  seeds        K = num_members seeds (config.seed, config.seed+1, ...) trained at once, vmapped
               (research.ensemble.seeds); members at their best validation epoch
               (config.ensemble.seed_members). With averaging on, also ``seeds_ema``: the K
               seeds' EMA parameters as members.
  checkpoints  the first seed's per-epoch snapshots (<workdir>/snapshots), latest first, or the
               epochs in config.ensemble.checkpoint_epochs.
  averages     the first seed's final raw, EMA and Polyak parameters as three members.
  topk         the best K runs of config.ensemble.workdirs (run workdirs / a search directory);
               when empty, a small random search (learning rate, width, L2) is run first under
               <workdir>/topk_runs.
With config.distill.enabled the seed ensemble is distilled into one student (and a hard-label
student with the same recipe is trained for comparison).

Outputs in --workdir: ensemble.json (everything), ensemble.txt (the tables),
figures/ensemble_accuracy_vs_k.png, snapshots/ (per-epoch stacked variables of the seed run).
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags, logging

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from research.launch import default_config, define_config_file  # noqa: E402

_CONFIG = define_config_file(default_config("ensemble_digits.py"),
                             "Experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)

KINDS = ("seeds", "checkpoints", "averages", "topk")


def _parse_kinds(text: str) -> list[str]:
  kinds = [k.strip() for k in str(text).split(",") if k.strip()]
  unknown = [k for k in kinds if k not in KINDS]
  if unknown or not kinds:
    raise ValueError(f"config.ensemble.kinds={text!r} has unknown or no kinds {unknown}; "
                     f"known: {', '.join(KINDS)}.")
  return kinds


def _log(message: str) -> None:
  logging.info(message)
  print(message, flush=True)


def _single_model_rows(result, members_by_kind: dict, dataset) -> dict:
  """Mean and std over the K seeds of single-model accuracies: best-val raw, final raw, EMA,
  Polyak (the parameter-averaging comparison)."""
  from research.ensemble import seeds as seeds_lib
  from research.ensemble.combine import member_metrics
  from research.ensemble.members import member_logits
  rows = {}
  for which in ("best", "final", "ema", "polyak"):
    try:
      members = members_by_kind.get(which) or seeds_lib.seed_members(result, which)
    except ValueError:
      continue
    row = {}
    for split in ("val", "test"):
      x, y = getattr(dataset, f"x_{split}"), np.asarray(getattr(dataset, f"y_{split}"))
      accs = [m["accuracy"] for m in member_metrics(member_logits(members, x), y)]
      row[split] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "all": accs}
    rows[which] = row
  return rows


def _mini_search(config, workdir: str, num_runs: int, num_epochs: int) -> list[str]:
  """A small random search (log-uniform learning rate and L2, width) of single runs, so that a
  top-k ensemble can be built without research.search. Returns the run workdirs."""
  from research import train
  rng = np.random.default_rng(int(config.seed) + 12345)
  paths = []
  for i in range(num_runs):
    path = os.path.join(workdir, f"run_{i:02d}")
    if os.path.exists(os.path.join(path, "metrics.jsonl")):
      paths.append(path)
      continue
    cfg = config.copy_and_resolve_references()
    cfg.seed = int(config.seed) + 1000 + i
    cfg.train.num_epochs = num_epochs
    cfg.optimizer.learning_rate = float(10 ** rng.uniform(-3.5, -2.0))
    cfg.loss.l2 = float(10 ** rng.uniform(-6, -3))
    width = int(rng.choice([64, 128, 256, 512]))
    cfg.model.hidden_sizes = (width, width)
    cfg.averaging.ema_decay = 0.0
    cfg.averaging.polyak_start_epoch = -1
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
      f.write(cfg.to_json())
    _log(f"top-k search run {i}: lr={cfg.optimizer.learning_rate:.2e} l2={cfg.loss.l2:.1e} "
         f"width={width}")
    train.train_and_evaluate(cfg, path)
    paths.append(path)
  return paths


def run_once(config, workdir: str) -> dict:
  """One study: train/collect the members of every kind, evaluate, distil; writes the outputs."""
  from research.averaging import averaged_params
  from research.ensemble import report, seeds as seeds_lib, snapshots, workdirs
  from research.ensemble.distill import distill_from_members

  os.makedirs(workdir, exist_ok=True)
  ens = config.ensemble
  kinds = _parse_kinds(ens.kinds)
  k = int(ens.num_members)
  if k < 1:
    raise ValueError(f"config.ensemble.num_members={k} must be >= 1.")
  distill_on = bool(config.get("distill", {}).get("enabled", False))
  members_by_kind: dict[str, list] = {}
  out: dict = {"config": json.loads(config.to_json())}
  seed_result = None
  dataset = None

  if {"seeds", "checkpoints", "averages"} & set(kinds) or distill_on:
    seeds = [int(config.seed) + i for i in range(k)]
    _log(f"training {k} seeds {seeds} at once (vmapped) for {config.train.num_epochs} epochs")
    snap_dir = os.path.join(workdir, "snapshots")
    seed_result = seeds_lib.train_seeds(config, seeds, snapshot_dir=snap_dir, log=_log)
    dataset = seed_result.dataset
    out["seed_training"] = {"history": seed_result.history,
                            "best_val_accuracy": seed_result.best_val_accuracy,
                            "best_epoch": seed_result.best_epoch}
    members_by_kind["seeds"] = seeds_lib.seed_members(seed_result, ens.seed_members)
    averages_on = seed_result.state.averages is not None
    if averages_on and "ema" in averaged_params(seed_result.state.averages):
      members_by_kind["seeds_ema"] = seeds_lib.seed_members(seed_result, "ema")
    if "checkpoints" in kinds:
      epochs = [int(e) for e in str(ens.checkpoint_epochs).split(",") if e.strip()]
      if not epochs:
        epochs = snapshots.list_snapshots(snap_dir)[::-1][:k]  # latest first
      members_by_kind["checkpoints"] = snapshots.members_from_snapshots(
          snap_dir, seed_result.model, epochs, member_index=0)
    if "averages" in kinds:
      first = [seeds_lib.seed_members(seed_result, "final")[0]]
      for which in ("ema", "polyak"):
        try:
          first.append(seeds_lib.seed_members(seed_result, which)[0])
        except ValueError as e:
          _log(f"averages kind: {e}")
      members_by_kind["averages"] = first
    out["single_models"] = _single_model_rows(
        seed_result, {"best": members_by_kind["seeds"] if ens.seed_members == "best" else None},
        dataset)

  if "topk" in kinds:
    paths = str(ens.workdirs)
    if not paths.strip():
      run_dir = os.path.join(workdir, "topk_runs")
      paths = _mini_search(config, run_dir, int(ens.topk_runs), int(ens.topk_epochs))
    members_by_kind["topk"] = workdirs.members_from_workdirs(paths, k)
    if dataset is None:
      from research import data as data_lib
      dataset = data_lib.load_dataset(config.data)

  results = {}
  for kind, members in members_by_kind.items():
    if kind not in kinds and kind != "seeds_ema":
      continue
    _log(f"evaluating {kind}: {len(members)} members")
    results[kind] = report.evaluate_members(members, dataset, int(config.train.eval_batch_size),
                                            int(ens.timing_repeats))
  out["ensembles"] = results

  if distill_on:
    _log(f"distilling the {k}-seed ensemble into one student")
    out["distillation"] = distill_from_members(config, members_by_kind["seeds"], dataset,
                                               log=_log)

  text = report.format_report(results)
  if "single_models" in out:
    text += "single models, mean (std) over seeds:\n"
    for which, row in out["single_models"].items():
      text += (f"  {which:<8} val {row['val']['mean']:.4f} ({row['val']['std']:.4f})  "
               f"test {row['test']['mean']:.4f} ({row['test']['std']:.4f})\n")
  if "distillation" in out:
    d = out["distillation"]
    text += (f"distillation (T={d['config']['temperature']}, alpha={d['config']['alpha']}):\n")
    for split in ("val", "test"):
      r = d[split]
      text += (f"  {split}: single {r['single']:.4f} ensemble {r['ensemble']:.4f} student "
               f"{r['student']:.4f} hard-label student {r['hard_label_student']:.4f} "
               f"gain kept {r['gain_kept']:.2f} (vs hard-label student "
               f"{r['gain_kept_vs_baseline']:.2f})\n")
  print(text)
  with open(os.path.join(workdir, "ensemble.txt"), "w") as f:
    f.write(text)
  report.write_json(out, os.path.join(workdir, "ensemble.json"))
  fig = report.accuracy_vs_k_figure(
      results, os.path.join(workdir, "figures", "ensemble_accuracy_vs_k.png"),
      title=f"{config.data.name} {config.model.name}: ensemble accuracy vs members")
  _log(f"wrote {os.path.join(workdir, 'ensemble.json')} and {fig}")
  return out


def main(argv):
  del argv
  from research.ensemble import report
  config = _CONFIG.value
  workdir = _WORKDIR.value
  repeats = int(config.ensemble.get("repeats", 1))
  if repeats < 1:
    raise ValueError(f"config.ensemble.repeats={repeats} must be >= 1.")
  if repeats == 1:
    run_once(config, workdir)
    return
  # Repeats: the whole study again with disjoint seeds (config.seed + 100 r); the top-k search
  # runs once and is shared (its ensemble does not depend on the seed).
  outs = []
  for r in range(repeats):
    cfg = config.copy_and_resolve_references()
    cfg.seed = int(config.seed) + 100 * r
    if r > 0 and "topk" in _parse_kinds(cfg.ensemble.kinds) and not str(cfg.ensemble.workdirs):
      cfg.ensemble.workdirs = os.path.join(workdir, "rep_0", "topk_runs")
    _log(f"=== repeat {r + 1}/{repeats}: seed {cfg.seed} ===")
    outs.append(run_once(cfg, os.path.join(workdir, f"rep_{r}")))
  summary = report.aggregate(outs)
  text = report.format_summary(summary)
  print(text)
  with open(os.path.join(workdir, "summary.txt"), "w") as f:
    f.write(text)
  report.write_json(summary, os.path.join(workdir, "summary.json"))
  fig = report.mean_accuracy_vs_k_figure(
      summary, os.path.join(workdir, "figures", "ensemble_accuracy_vs_k_mean.png"),
      title=f"{config.data.name} {config.model.name}: mean over {repeats} repeats")
  _log(f"wrote {os.path.join(workdir, 'summary.json')} and {fig}")


if __name__ == "__main__":
  app.run(main)
