"""The ensemble study of ``scripts/ensemble.py``: every kind of ensemble, accuracy against K, and
distillation of the seed ensemble into one student.

Kinds (``config.ensemble.kinds``, comma-separated):

* ``seeds``: K = ``num_members`` seeds (``config.seed``, ``config.seed + 1``, ...) trained at once
  (``research.train.train_members``), members at their best validation epoch
  (``config.ensemble.seed_members``). With averaging on, also ``seeds_ema``: the K seeds' EMA
  parameters as members.
* ``checkpoints``: the first seed's per-epoch snapshots (``<workdir>/snapshots``), latest first, or
  the epochs in ``config.ensemble.checkpoint_epochs``.
* ``averages``: the first seed's final raw, EMA and Polyak parameters as three members.
* ``topk``: the best K runs of ``config.ensemble.workdirs`` (run workdirs / a search directory);
  when empty, a small random search (learning rate, width, L2) is run first under
  ``<workdir>/topk_runs`` (the runs of one width are one ``train_members`` program).

With ``config.distill.enabled`` the seed ensemble is distilled into one student (and a hard-label
student with the same recipe is trained for comparison).

Outputs in the workdir: ``ensemble.json`` (everything), ``ensemble.txt`` (the tables),
``figures/ensemble_accuracy_vs_k.png``, ``snapshots/``; with ``config.ensemble.repeats > 1`` one
``rep_<r>/`` per repeat and the mean +- std over repeats in ``summary.txt``, ``summary.json`` and
``figures/ensemble_accuracy_vs_k_mean.png``.

On several processes (one ``jax.distributed`` run) the members train data parallel over all of
them (``train_members``; orbax saves the snapshots and checkpoints from every process); the
evaluations and the distilled student, small, are computed by every process alike (same inputs,
same results); process 0 alone writes the tables, JSON and figures.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import numpy as np

from research.ensemble import report, seeds as seeds_lib, snapshots, workdirs
from research.ensemble.combine import member_metrics
from research.ensemble.members import member_logits
from research.launch.config_tree import parse_choices
from research.train import distributed

KINDS = ("seeds", "checkpoints", "averages", "topk")
SEED_MEMBERS = ("best", "final", "ema", "polyak")
Log = Callable[[str], None]


def parse_kinds(text: str) -> list[str]:
  """``"seeds,topk"`` -> ``["seeds", "topk"]``; unknown or no kinds raise ``ValueError``."""
  return parse_choices("ensemble.kinds", text, KINDS, "kinds")


def _integer(name: str, value: Any, low: int) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"config.{name}={value!r} must be an integer >= {low}.")
  return value


def validate_study_config(config: Any) -> None:
  """Checks ``config.ensemble`` and ``config.distill`` before anything is trained.

  Raises:
    ValueError: the first bad value, named with what is allowed.
  """
  from research.ensemble.distill import check_distillation_settings
  ens = config.ensemble
  parse_kinds(ens.kinds)
  _integer("ensemble.num_members", ens.num_members, 1)
  _integer("ensemble.repeats", ens.get("repeats", 1), 1)
  _integer("ensemble.timing_repeats", ens.timing_repeats, 0)
  _integer("ensemble.topk_runs", ens.topk_runs, 1)
  _integer("ensemble.topk_epochs", ens.topk_epochs, 1)
  if ens.seed_members not in SEED_MEMBERS:
    raise ValueError(f"config.ensemble.seed_members={ens.seed_members!r} is unknown; known: "
                     f"{', '.join(SEED_MEMBERS)}.")
  if "topk" in parse_kinds(ens.kinds) and str(ens.workdirs).strip():
    if not workdirs.find_run_workdirs(str(ens.workdirs)):
      raise ValueError(f"config.ensemble.workdirs={ens.workdirs!r} holds no run workdir (a "
                       "directory with metrics.jsonl) and no search directory; give run "
                       "workdirs, globs or a search dir, or '' for a small search of its own.")
  for text in str(ens.checkpoint_epochs).split(","):
    if text.strip() and (not text.strip().isdigit() or int(text) < 1):
      raise ValueError(f"config.ensemble.checkpoint_epochs={ens.checkpoint_epochs!r} must be "
                       "comma-separated epochs >= 1 (or '' for the last num_members).")
  if config.get("distill", {}).get("enabled", False):
    dcfg = config.distill
    try:
      check_distillation_settings(float(dcfg.temperature), float(dcfg.alpha))
    except ValueError as e:
      raise ValueError(f"config.distill.{e}") from None
    _integer("distill.num_epochs", dcfg.num_epochs, 1)
    _integer("distill.student_seed_offset", dcfg.student_seed_offset, 0)


def single_model_rows(result: seeds_lib.SeedsResult, best_members: list | None,
                      dataset: Any) -> dict:
  """Mean and std over the K seeds of single-model accuracies: best-val raw, final raw, EMA,
  Polyak (the parameter-averaging comparison)."""
  rows = {}
  for which in SEED_MEMBERS:
    try:
      members = (best_members if which == "best" and best_members else
                 seeds_lib.seed_members(result, which))
    except ValueError:
      continue   # an average that was off
    row = {}
    for split in ("val", "test"):
      x, y = getattr(dataset, f"x_{split}"), np.asarray(getattr(dataset, f"y_{split}"))
      accs = [m["accuracy"] for m in member_metrics(member_logits(members, x), y)]
      row[split] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "all": accs}
    rows[which] = row
  return rows


def mini_search(config: Any, workdir: str, num_runs: int, num_epochs: int, log: Log
                ) -> list[str]:
  """A small random search (log-uniform learning rate and L2, width) of runs, so that a top-k
  ensemble can be built without research.search; the runs of one width are trained at once
  (``train_members``: they differ only in hyperparameters and seed). Returns the run workdirs;
  finished runs (with a metrics.jsonl) are kept."""
  from research.train import train_members
  rng = np.random.default_rng(int(config.seed) + 12345)
  by_width: dict[int, list[tuple[str, Any]]] = {}
  paths = []
  for i in range(num_runs):
    path = os.path.join(workdir, f"run_{i:02d}")
    cfg = config.copy_and_resolve_references()
    cfg.seed = int(config.seed) + 1000 + i
    cfg.train.num_epochs = num_epochs
    cfg.optimizer.learning_rate = float(10 ** rng.uniform(-3.5, -2.0))
    cfg.loss.l2 = float(10 ** rng.uniform(-6, -3))
    width = int(rng.choice([64, 128, 256, 512]))
    cfg.model.hidden_sizes = (width, width)
    cfg.averaging.ema_decay = 0.0
    cfg.averaging.polyak_start_epoch = -1
    paths.append(path)
    if os.path.exists(os.path.join(path, "metrics.jsonl")):
      continue
    by_width.setdefault(width, []).append((path, cfg))
  for width, runs in sorted(by_width.items()):
    distributed.decide(_write_configs, runs)   # process 0's files; the others wait for them
    for path, cfg in runs:
      log(f"top-k search {os.path.basename(path)}: lr={cfg.optimizer.learning_rate:.2e} "
          f"l2={cfg.loss.l2:.1e} width={width}")
    train_members([cfg for _, cfg in runs], [path for path, _ in runs])
  return paths


def _write_configs(runs: list[tuple[str, Any]]) -> None:
  for path, cfg in runs:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
      f.write(cfg.to_json())


def run_study(config: Any, workdir: str, log: Log = print) -> dict:
  """One study: train/collect the members of every kind, evaluate, distil; writes the outputs."""
  from research.averaging import averaged_params
  from research.ensemble.distill import distill_from_members

  validate_study_config(config)
  os.makedirs(workdir, exist_ok=True)
  ens = config.ensemble
  kinds = parse_kinds(ens.kinds)
  k = int(ens.num_members)
  distill_on = bool(config.get("distill", {}).get("enabled", False))
  members_by_kind: dict[str, list] = {}
  out: dict = {"config": json.loads(config.to_json())}
  dataset = None

  if {"seeds", "checkpoints", "averages"} & set(kinds) or distill_on:
    seeds = [int(config.seed) + i for i in range(k)]
    log(f"training {k} seeds {seeds} at once (vmapped) for {config.train.num_epochs} epochs")
    snap_dir = os.path.join(workdir, "snapshots")
    seed_result = seeds_lib.train_seeds(config, seeds, snapshot_dir=snap_dir, log=log)
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
          log(f"averages kind: {e}")
      members_by_kind["averages"] = first
    out["single_models"] = single_model_rows(
        seed_result, members_by_kind["seeds"] if ens.seed_members == "best" else None, dataset)

  if "topk" in kinds:
    paths = str(ens.workdirs)
    if not paths.strip():
      paths = mini_search(config, os.path.join(workdir, "topk_runs"), int(ens.topk_runs),
                          int(ens.topk_epochs), log)
    members_by_kind["topk"] = workdirs.members_from_workdirs(paths, k)
    if dataset is None:
      from research import data as data_lib
      dataset = data_lib.load_dataset(config.data)

  results = {}
  for kind, members in members_by_kind.items():
    if kind not in kinds and kind != "seeds_ema":
      continue
    log(f"evaluating {kind}: {len(members)} members")
    results[kind] = report.evaluate_members(members, dataset, int(config.train.eval_batch_size),
                                            int(ens.timing_repeats))
  out["ensembles"] = results

  if distill_on:
    log(f"distilling the {k}-seed ensemble into one student")
    out["distillation"] = distill_from_members(config, members_by_kind["seeds"], dataset,
                                               log=log)

  _write(workdir, "ensemble", out, report.format_report(results) + _extra_text(out), log,
         lambda path: report.accuracy_vs_k_figure(
             results, path, title=f"{config.data.name} {config.model.name}: ensemble accuracy "
             "vs members"), "ensemble_accuracy_vs_k.png")
  return out


def _write(workdir: str, name: str, record: dict, text: str, log: Log,
           figure: Callable[[str], str], figure_name: str) -> None:
  """``<name>.txt`` (the tables, also logged), ``<name>.json`` and ``figures/<figure_name>``,
  written by process 0 alone (the others wait for it) in a run of several processes."""
  log(text)
  distributed.decide(_write_files, workdir, name, record, text, figure, figure_name)
  log(f"wrote {os.path.join(workdir, name + '.json')} and "
      f"{os.path.join(workdir, 'figures', figure_name)}")


def _write_files(workdir: str, name: str, record: dict, text: str,
                 figure: Callable[[str], str], figure_name: str) -> None:
  with open(os.path.join(workdir, f"{name}.txt"), "w") as f:
    f.write(text)
  report.write_json(record, os.path.join(workdir, f"{name}.json"))
  figure(os.path.join(workdir, "figures", figure_name))


def _fmt(value: float, digits: int = 2) -> str:
  return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _extra_text(out: dict) -> str:
  text = ""
  if "single_models" in out:
    text += "single models, mean (std) over seeds:\n"
    for which, row in out["single_models"].items():
      text += (f"  {which:<8} val {row['val']['mean']:.4f} ({row['val']['std']:.4f})  "
               f"test {row['test']['mean']:.4f} ({row['test']['std']:.4f})\n")
  if "distillation" in out:
    d = out["distillation"]
    text += f"distillation (T={d['config']['temperature']}, alpha={d['config']['alpha']}):\n"
    for split in ("val", "test"):
      r = d[split]
      text += (f"  {split}: single {r['single']:.4f} ensemble {r['ensemble']:.4f} student "
               f"{r['student']:.4f} hard-label student {r['hard_label_student']:.4f} "
               f"gain kept {_fmt(r['gain_kept'])} (vs hard-label student "
               f"{_fmt(r['gain_kept_vs_baseline'])}; n/a: the ensemble gains nothing)\n")
  return text


def run_repeats(config: Any, workdir: str, log: Log = print) -> dict:
  """``config.ensemble.repeats`` studies with disjoint seeds (``config.seed + 100 r``), then the
  mean +- std over them; one study when ``repeats == 1``. The top-k search runs once and is
  shared (its ensemble does not depend on the seed)."""
  validate_study_config(config)
  repeats = int(config.ensemble.get("repeats", 1))
  if repeats == 1:
    return run_study(config, workdir, log)
  outs = []
  for r in range(repeats):
    cfg = config.copy_and_resolve_references()
    cfg.seed = int(config.seed) + 100 * r
    if r > 0 and "topk" in parse_kinds(cfg.ensemble.kinds) and not str(cfg.ensemble.workdirs):
      cfg.ensemble.workdirs = os.path.join(workdir, "rep_0", "topk_runs")
    log(f"=== repeat {r + 1}/{repeats}: seed {cfg.seed} ===")
    outs.append(run_study(cfg, os.path.join(workdir, f"rep_{r}"), log))
  summary = report.aggregate(outs)
  _write(workdir, "summary", summary, report.format_summary(summary), log,
         lambda path: report.mean_accuracy_vs_k_figure(
             summary, path, title=f"{config.data.name} {config.model.name}: mean over "
             f"{repeats} repeats"), "ensemble_accuracy_vs_k_mean.png")
  return summary
