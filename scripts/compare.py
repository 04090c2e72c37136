r"""Compares runs side by side: the config fields that differ, then their results.

    python3 scripts/compare.py runs/lr_init/*                   # an ablation's variants
    python3 scripts/compare.py runs/a runs/b runs/c --sort=test_accuracy --out=/tmp/cmp

Takes any set of run workdirs (done, diverged, interrupted or killed: a run without a
summary.json is read from its config.json and metrics.jsonl); an ablation's directory stands for
its variants. Prints one row per run, or, when runs differ only in the seed, one row per variant
with mean ± std over its seeds; columns: the differing config fields, best val accuracy, test
accuracy at the best epoch, final train loss, epochs, wall time, status and the verdict's first
line. Writes compare.csv (the table), compare_runs.csv (one row per run), compare.json (both) and
compare.png (validation accuracy and loss vs epoch, one colour per variant, seeds as a band) to
--out (default: the runs' common parent). Exit status: 0, or 1 for a user mistake (a path that is
not a run, an unknown --sort). Reference: research/ablate/README.md.
"""
import os

from absl import flags

from research import launch

_OUT = flags.DEFINE_string(
    "out", None, "Directory for compare.csv, compare_runs.csv, compare.json and compare.png "
    "(default: the runs' common parent).")
_SORT = flags.DEFINE_string(
    "sort", "best_val_accuracy", "Column to sort by: best_val_accuracy, test_accuracy, "
    "final_train_loss, epochs, wall_time_s (best first) or a differing config field.")
_BAND = flags.DEFINE_string(
    "band", "std", "Band of a variant's seeds in the figure: std (mean ± std) or minmax.")
_FIGURE = flags.DEFINE_boolean("figure", True, "Draw compare.png.")

def main(paths: list[str]) -> int:
  from research.ablate import compare
  if _BAND.value not in compare.BANDS:
    raise launch.UserError(f"--band={_BAND.value!r} is unknown; use one of "
                           f"{', '.join(compare.BANDS)}")
  workdirs = launch.validated(compare.expand_paths, paths)
  out = _OUT.value or os.path.commonpath(workdirs)
  if not _OUT.value and (len(workdirs) == 1 or out in workdirs):
    out = os.path.dirname(out)
  out = launch.checked_workdir(out, "--out")
  runs = [launch.validated(compare.read_run, w) for w in workdirs]
  comparison = launch.validated(compare.compare, runs, _SORT.value)
  print(compare.format_table(comparison), flush=True)
  paths = compare.write_outputs(comparison, out)
  if _FIGURE.value:
    paths.append(compare.figure(comparison, os.path.join(out, "compare.png"), _BAND.value))
  print("wrote " + ", ".join(paths), flush=True)
  return launch.EXIT_OK


if __name__ == "__main__":
  launch.run(main, positional="workdirs")
