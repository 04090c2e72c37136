r"""Runs an ablation: the product of --grid overrides (x --seeds) as sibling workdirs.

    python3 scripts/ablate.py --config=configs/default.py --workdir=runs/lr_init \
        --grid='optimizer.learning_rate=1e-4,1e-3,1e-2' --grid='model.init=xavier,he' --seeds=3
    python3 scripts/compare.py runs/lr_init/*        # the table, CSV/JSON and the curves

Each variant trains in ``<workdir>/<its overrides>``, e.g.
``runs/lr_init/optimizer.learning_rate=1e-3,model.init=he,seed=1``. Values are parsed with the
config field's own type, as ``--config.<field>=<value>`` (tuples: ``model.hidden_sizes=(64,64),
(128,)``); ``--config.<field>=<value>`` overrides apply to every variant. Variants that differ
only in what the members trainer stacks (seed, learning rate and the other optimizer
hyperparameters, loss.l2, dropout, init scheme, output scale) train as vmapped members of ONE
program; the others as separate runs (``--novmap``: all separately, each with a single run's full
babysitting). ``--dry_run`` prints the variants and how they would train.

Re-running the same command skips finished variants (done, or diverged) and resumes interrupted
ones (a separate run from its latest checkpoint; a members program is rerun whole). Exit status:
0 every variant finished (a diverged variant is a result, shown by compare), 1 a user mistake
(bad --grid, a variant's bad config, a workdir holding another experiment; nothing written), 130
interrupted. Reference: research/ablate/README.md.

On several processes (hosts) as one run (``--coordinator_address``, ``--num_processes``,
``--process_id``, or a SLURM / TPU slice's environment) every variant trains data parallel over
all of them, as scripts/train.py does; process 0 writes the files and prints.
"""
import os
import signal

from absl import flags

from research import launch

_CONFIG = launch.define_config_file(launch.default_config("default.py"),
                                    "The config every variant starts from.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "The ablation's directory (required): each variant trains in a "
    "subdirectory named after its overrides; re-running with it resumes.")
_GRID = flags.DEFINE_multi_string(
    "grid", [], "'<field>=<value>,<value>,...': one axis of the grid (repeat the flag for more "
    "axes; the variants are their product). Values have the field's type, as --config.<field>.")
_SEEDS = flags.DEFINE_integer(
    "seeds", 1, "Seeds per variant: config.seed, config.seed + 1, ... (compare reports mean ± std "
    "over them).")
_VMAP = flags.DEFINE_boolean(
    "vmap", True, "Train the variants that differ only in stackable values (seed, optimizer "
    "hyperparameters, l2, dropout, init) as vmapped members of one program.")
_MAX_MEMBERS = flags.DEFINE_integer(
    "max_members", 0, "At most this many members per vmapped program (0: no limit).")
_DRY_RUN = flags.DEFINE_boolean(
    "dry_run", False, "Print the variants and how they would train, then exit (nothing written).")
_KILL_AFTER_EPOCHS = flags.DEFINE_integer(
    "kill_after_epochs", 0, "Testing aid: SIGKILL this process after that many epochs trained by "
    "it (an epoch of a members program counts once), to exercise resume (0: never).")


def _plan():
  from research import ablate
  from research.ablate import launcher
  config = _CONFIG.value
  if not _WORKDIR.present or not _WORKDIR.value:
    raise launch.UserError("--workdir is required: the ablation's directory, e.g. "
                           "--workdir=runs/lr_init (re-running with it resumes)")
  root = launch.checked_workdir(_WORKDIR.value)
  axes = launch.validated(ablate.parse_grid, config, _GRID.value, _SEEDS.value)
  variants = launch.validated(ablate.expand, config, axes)
  launch.validated(launcher.check_workdirs, root, variants)
  cache = launcher.DataCache()
  launch.validated(launcher.check_variants, variants, cache)
  units = launch.validated(ablate.plan_units, variants, _VMAP.value, _MAX_MEMBERS.value)
  return root, axes, variants, units, cache


def main() -> int:
  root, axes, variants, units, cache = _plan()
  from research import ablate, train
  from research.ablate import compare, launcher
  print(f"{len(variants)} variants in {root}, {len(units)} training calls:", flush=True)
  for line in ablate.describe(units):
    print(f"  {line}", flush=True)
  if _DRY_RUN.value:
    return launch.EXIT_OK
  from research.train import distributed
  distributed.barrier("ablate: every process validated")   # before process 0 writes anything
  distributed.decide(launcher.write_ablation, root, {
      "config": launch.config_source(), "grid": list(_GRID.value), "seeds": _SEEDS.value,
      "axes": [{"field": a.path, "values": list(a.texts)} for a in axes],
      "vmap": _VMAP.value, "max_members": _MAX_MEMBERS.value,
      "units": [{"kind": u.kind, "variants": [v.name for v in u.variants]} for u in units]})
  on_epoch_end = None
  if _KILL_AFTER_EPOCHS.value > 0:
    trained = [0]

    def on_epoch_end():
      trained[0] += 1
      if trained[0] == _KILL_AFTER_EPOCHS.value:
        os.kill(os.getpid(), signal.SIGKILL)
  try:
    outcomes = launcher.run_ablation(root, units, on_epoch_end=on_epoch_end, cache=cache,
                                     log=lambda line: print(line, flush=True))
  except (ValueError, train.CheckpointError, train.ResumeError) as e:
    raise launch.UserError(str(e)) from None
  print(f"\n{len(outcomes)} variants: {launcher.count_outcomes(outcomes)}", flush=True)
  runs = [compare.read_run(o.workdir) for o in outcomes]
  print(compare.format_table(compare.compare(runs)), flush=True)
  print(f"\nCSV, JSON and curves: python3 scripts/compare.py {root}/*", flush=True)
  return launch.EXIT_OK


if __name__ == "__main__":
  launch.run(main, config=_CONFIG, multiprocess=True)
