"""Runs an ablation's units in sibling workdirs; a re-launch skips what is finished.

Every variant trains in ``<root>/<variant name>``. A variant is *finished* when its
``summary.json`` says ``done`` for the same number of epochs, or ``diverged`` (training it again
would diverge again: the run is deterministic). A re-launch of the same command

* skips finished variants, and a members program whose variants are all finished;
* resumes a separate run from its latest checkpoint (``train_and_evaluate`` does that);
* reruns a members program whose variants are not all finished as a whole, after clearing what
  its last try left in their workdirs (records, checkpoints, summaries), so no epoch is counted
  twice. Rerunning the whole program (not only the unfinished members) keeps every number equal
  to an uninterrupted ablation's, to the last bit: it is the same compiled program.

A member's workdir gets what the members trainer writes (``metrics.jsonl`` epoch rows, the best
epoch's checkpoint) plus, from here, the files a single run ends with: ``config.json``,
``summary.json`` (the loop's format: status, best and last records, test metrics of the best
epoch's parameters, verdict, wall time and its phases, commit, versions; ``trained_as`` says
which program it shared, and its ``wall_time_s`` is that program's plus its own figures and
verdict), ``verdict.txt`` (from the epoch records: the members trainer keeps no batch losses or
update ratios) and the figures when ``config.monitor.figures``.
``members.json`` marks a member's workdir: a separate run never tries to resume from it.

On several processes (one ``jax.distributed`` run, e.g. ``srun --ntasks=4 scripts/ablate.py``)
every unit trains on all of them, data parallel (``train_and_evaluate``, ``train_members``); the
files of the ablation are process 0's: it alone looks at what is finished, clears and prepares
workdirs and writes summaries, verdicts and figures, and hands its decisions to the others
(``research.train.distributed.decide``), which wait for it.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable, NamedTuple, Sequence

from research.ablate.compare import read_json
from research.ablate.grid import Variant
from research.ablate.plan import MEMBERS, Unit

ABLATION_FILE = "ablation.json"
MEMBERS_FILE = "members.json"  # research.train.resume.MEMBER_MARK
SUMMARY_FILE = "summary.json"
#: Statuses that mean "nothing more to train" (module docstring).
FINISHED = ("done", "diverged")
#: What a run leaves in its workdir; cleared before a members program is rerun.
RUN_OUTPUTS = ("metrics.jsonl", "histograms.jsonl", SUMMARY_FILE, "verdict.txt",
               "first_layer.npz", "checkpoints", "figures", "tensorboard", MEMBERS_FILE)


class Outcome(NamedTuple):
  """How a variant ended in this launch: ``status`` is a summary status, or ``skipped:<status>``."""
  name: str
  workdir: str
  status: str


def count_outcomes(outcomes: Sequence[Outcome]) -> str:
  """``"2 done, 1 diverged; finished before: 4 done"``: this launch's statuses, then the skipped
  variants' (finished by an earlier launch)."""
  def count(statuses):
    return ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
  trained = [o.status for o in outcomes if not o.status.startswith("skipped:")]
  skipped = [o.status.split(":", 1)[1] for o in outcomes if o.status.startswith("skipped:")]
  parts = ([count(trained)] if trained else []) + (
      [f"finished before: {count(skipped)}"] if skipped else [])
  return "; ".join(parts)


def variant_workdir(root: str, variant: Variant) -> str:
  return os.path.join(root, variant.name)


def finished_status(workdir: str, config: Any) -> str | None:
  """The summary status when the variant in ``workdir`` needs no more training, else None."""
  summary = read_json(os.path.join(workdir, SUMMARY_FILE))
  if not isinstance(summary, dict) or summary.get("status") not in FINISHED:
    return None
  if summary["status"] == "done" and summary.get("num_epochs") != int(config.train.num_epochs):
    return None  # asked for more (or fewer) epochs: a separate run continues from its checkpoint
  return summary["status"]


def check_workdirs(root: str, variants: Sequence[Variant]) -> None:
  """Refuses, before anything runs, a variant workdir that is a file or holds another experiment.

  Raises:
    ValueError: names the workdir and every differing field (``research.train.resume``).
  """
  from research.train import resume
  if os.path.exists(root) and not os.path.isdir(root):
    raise ValueError(f"--workdir={root} is a file, not a directory")
  for variant in variants:
    workdir = variant_workdir(root, variant)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
      raise ValueError(f"{workdir} is a file, not a variant's workdir; move it away")
    try:
      resume.check_resumable(workdir, variant.config)
    except resume.ResumeError as e:
      raise ValueError(str(e)) from None


def clear_run(workdir: str) -> None:
  """Removes what an earlier try left in ``workdir`` (:data:`RUN_OUTPUTS`), keeping the rest."""
  for name in RUN_OUTPUTS:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)


def write_ablation(root: str, record: dict) -> str:
  """``<root>/ablation.json``: the command's grid, seeds and units (rewritten at each launch)."""
  os.makedirs(root, exist_ok=True)
  path = os.path.join(root, ABLATION_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=2, default=repr)
  os.replace(path + ".tmp", path)
  return path


class DataCache:
  """Loads each distinct ``config.data`` once for the whole ablation."""

  def __init__(self):
    self._datasets: dict[str, Any] = {}

  def __call__(self, config: Any):
    from research import data as data_lib
    key = config.data.to_json(sort_keys=True)
    if key not in self._datasets:
      self._datasets[key] = data_lib.load_dataset(config.data)
    return self._datasets[key]


def check_variants(variants: Sequence[Variant], cache: DataCache) -> None:
  """Every variant's config, checked before anything runs: ``validate_config``, then its data,
  model, rule and steps per epoch built (a batch larger than the data is caught here too).

  Raises:
    ValueError: the first bad variant, named, with the engine's message.
  """
  from research import train
  for variant in variants:
    try:
      train.validate_config(variant.config)
      train.build_experiment(variant.config, cache(variant.config))
    except ValueError as e:
      raise ValueError(f"variant {variant.name}: {e}") from None


def run_single(root: str, variant: Variant, dataset, on_epoch_end: Callable[[], None] | None,
               log: Callable[[str], None]) -> str:
  """``train_and_evaluate`` in the variant's workdir (resumed from its checkpoints); its status."""
  from research import train
  from research.train import distributed
  workdir = variant_workdir(root, variant)

  def clear_members_try():
    if os.path.exists(os.path.join(workdir, MEMBERS_FILE)):
      clear_run(workdir)  # the unfinished records of a members program cannot be resumed alone
  distributed.decide(clear_members_try)
  hook = None
  if on_epoch_end is not None:
    def hook(epoch, record):
      del epoch, record
      on_epoch_end()
  try:
    train.train_and_evaluate(variant.config, workdir, on_epoch_end=hook, dataset=dataset,
                             log=lambda line: log(f"  {line}"))
  except train.DivergenceError as e:
    log(f"  diverged: {e}")
    return "diverged"
  return "done"


def _first_kernel(params: Any) -> Any:
  for name in ("Conv_0", "Dense_0"):
    if name in params:
      return params[name]["kernel"]
  return None


def member_summary(config: Any, history: list[dict], best_val_accuracy: float, best_epoch: int,
                   error: str | None, test: dict | None, members: int, index: int) -> dict:
  """A member's ``summary.json`` record, with the keys of ``research.train.loop.finish`` (the
  caller adds ``verdict``, ``wall_time_s`` and ``phases_s``)."""
  import jax

  from research import optim
  summary = {"status": "diverged" if error else "done",
             "best_val_accuracy": float(best_val_accuracy), "best_epoch": int(best_epoch),
             "epochs": len(history), "num_epochs": int(config.train.num_epochs),
             "exported": "raw", "backend": jax.default_backend(),
             # several processes: the members trained data parallel over all their devices
             "num_devices": jax.device_count() if jax.process_count() > 1 else 1,
             "num_processes": jax.process_count(),
             "update_path": optim.fused.status(config.optimizer.name),
             "last": history[-1] if history else None,
             "best": next((h for h in history if h["epoch"] == int(best_epoch)), None),
             "config": config.to_dict(),
             "trained_as": {"members": members, "index": index}}
  if test is not None:
    summary["test"] = {"raw": test}
    summary["test_accuracy"], summary["test_loss"] = test["accuracy"], test["loss"]
  if error:
    summary["error"] = error
  return summary


def _prepare_member_workdirs(variants: Sequence[Variant], workdirs: Sequence[str]) -> None:
  """Each member's workdir emptied of an earlier try, with its ``config.json`` and the
  ``members.json`` mark."""
  from research.train import resume
  for index, (variant, workdir) in enumerate(zip(variants, workdirs)):
    os.makedirs(workdir, exist_ok=True)
    clear_run(workdir)
    resume.save_config(workdir, variant.config)
    with open(os.path.join(workdir, MEMBERS_FILE), "w") as f:
      json.dump({"members": [v.name for v in variants], "index": index}, f, indent=2)


def _finish_member(workdir: str, summary: dict, history: list[dict], kernel: Any,
                   image_shape: Any, shared: dict[str, float], log: Callable[[str], None]
                   ) -> None:
  """A member's first-layer weights, figures, verdict and, last, its ``summary.json`` (which
  marks it finished), as ``research.train.loop.finish`` ends a single run."""
  from research import monitor
  from research.train import summary as summary_lib
  start = time.perf_counter()
  if summary["status"] == "done" and kernel is not None:
    monitor.save_first_layer(workdir, kernel, image_shape)
  if history and bool(summary["config"]["monitor"].get("figures", True)):
    monitor.make_figures(workdir, warn=log)
  if summary.get("error"):  # its diverged epoch has no record: the trainer's message says it
    verdict = [f"diverged: {summary['error']}: learning rate too high (lower it 3-10x)"]
    _write_lines(os.path.join(workdir, "verdict.txt"), verdict)
  else:
    verdict = monitor.write_verdict(workdir, history)
  phases = {**shared, "figures": time.perf_counter() - start}
  summary.update(verdict=verdict, wall_time_s=sum(phases.values()),
                 phases_s={name: round(value, 3) for name, value in phases.items()})
  summary_lib.write_summary(workdir, summary)


def run_members(root: str, variants: Sequence[Variant], dataset,
                on_epoch_end: Callable[[], None] | None, log: Callable[[str], None]) -> list[str]:
  """One ``train_members`` program for ``variants`` (their workdirs cleared first); statuses.

  A member's wall time is the program's (shared by its members: preparing the workdirs, the
  members trainer, the test split) plus its own figures and verdict; ``phases_s`` splits it.
  """
  import jax
  import numpy as np

  from research import train
  from research.train import distributed
  start = time.perf_counter()
  configs = [v.config for v in variants]
  workdirs = [variant_workdir(root, v) for v in variants]
  distributed.decide(_prepare_member_workdirs, variants, workdirs)
  hook = None
  if on_epoch_end is not None:
    def hook(epoch, records):
      del epoch
      on_epoch_end()
      return [False] * len(records)
  shared = {"other": time.perf_counter() - start}
  start = time.perf_counter()
  result = train.train_members(configs, workdirs, on_epoch_end=hook, dataset=dataset,
                               log=lambda line: log(f"  {line}"))
  shared["train"] = time.perf_counter() - start  # init, compile, epochs, validation, best saves
  # The test split at each member's best epoch, as the loop's finish() does for a single run.
  start = time.perf_counter()
  experiment = result.experiment
  eval_step = train.make_members_eval_step(experiment.model)
  best = result.best_variables
  test = train.evaluate(eval_step, best["params"], best["batch_stats"], experiment.dataset.x_test,
                        experiment.dataset.y_test, int(configs[0].train.eval_batch_size))
  final_params = jax.device_get(result.state.params)
  shared["test"] = time.perf_counter() - start

  def finish_members() -> list[str]:   # process 0's files; the others wait for its statuses
    statuses = []
    for m, (variant, workdir) in enumerate(zip(variants, workdirs)):
      history = result.history[m]
      member_test = ({"loss": float(test["loss"][m]), "accuracy": float(test["accuracy"][m])}
                     if history else None)
      summary = member_summary(variant.config, history, result.best_val_accuracy[m],
                               result.best_epoch[m], result.errors[m], member_test,
                               len(variants), m)
      kernel = _first_kernel(jax.tree.map(lambda leaf, m=m: np.asarray(leaf[m]), final_params))
      _finish_member(workdir, summary, history, kernel, experiment.dataset.image_shape, shared,
                     log)
      statuses.append(summary["status"])
      log(f"  {variant.name}: {summary['status']}, best val accuracy "
          f"{summary['best_val_accuracy']:.4f} (epoch {summary['best_epoch']})")
    return statuses
  return distributed.decide(finish_members)


def _write_lines(path: str, lines: Sequence[str]) -> None:
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")


def run_ablation(root: str, units: Sequence[Unit], *, log: Callable[[str], None] = print,
                 on_epoch_end: Callable[[], None] | None = None,
                 cache: DataCache | None = None) -> list[Outcome]:
  """Trains every unit in turn, skipping finished variants (module docstring).

  Args:
    root: the ablation's directory; variant ``v`` trains in ``<root>/<v.name>``.
    units: from :func:`research.ablate.plan.plan_units`.
    log: where progress lines go.
    on_epoch_end: called after every trained epoch of any unit (a testing aid kills the process
      from it).
    cache: the data sets already loaded (by :func:`check_variants`).

  Returns:
    One :class:`Outcome` per variant, in unit order.

  Raises:
    research.train.CheckpointError: a separate run's checkpoint that does not match.
  """
  from research.train import distributed
  cache = DataCache() if cache is None else cache
  outcomes: list[Outcome] = []
  for i, unit in enumerate(units, 1):
    workdirs = [variant_workdir(root, v) for v in unit.variants]
    done = distributed.decide(lambda unit=unit, workdirs=workdirs: [
        finished_status(w, v.config) for v, w in zip(unit.variants, workdirs)])
    what = (f"{len(unit.variants)} vmapped members of one program" if unit.kind == MEMBERS
            else f"separate run {unit.variants[0].name}")
    if all(done):
      for variant, workdir, status in zip(unit.variants, workdirs, done):
        log(f"[{i}/{len(units)}] skip {variant.name}: {status} already")
        outcomes.append(Outcome(variant.name, workdir, f"skipped:{status}"))
      continue
    log(f"[{i}/{len(units)}] {what}")
    dataset = cache(unit.variants[0].config)
    if unit.kind == MEMBERS:
      statuses = run_members(root, unit.variants, dataset, on_epoch_end, log)
    else:
      statuses = [run_single(root, unit.variants[0], dataset, on_epoch_end, log)]
    outcomes.extend(Outcome(v.name, w, s) for v, w, s in zip(unit.variants, workdirs, statuses))
  return outcomes
