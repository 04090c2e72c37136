r"""Hyperparameter search: master of a coarse-to-fine search with local workers.

    python scripts/search.py                                   # small search on digits, 2 workers
    python scripts/search.py --config=configs/search_digits.py --search_dir=/tmp/s \
        --config.search.num_workers=3 --config.search.stage_trials="(24,8,4)"
    python scripts/search.py --config.search.storage=postgresql://postgres@127.0.0.1:5433/search

The whole config is checked first: a bad value is one line on stderr and exit status 1, before
anything runs or is written. One master per search: a second one on the same search dir (or the
same search in the same store) exits with status 1 and names the master that holds it.
Stopping it (Ctrl-C, or SIGTERM from a scheduler) stops its local workers (exit status 130);
their running trials are failed and retried, and running it again with the same --search_dir
continues the search. Prints the ranked table, the border warnings and the figure paths;
everything is also in <search_dir>/results.txt and <search_dir>/trials.csv, the trials in
<search_dir>/trials (``ls | sort`` ranks them), the store in <search_dir>/study.db by default.
Exit status 2: the search could not go on (every local worker died; see the worker logs).
See research/search/README.md.
"""
from __future__ import annotations

import os
import sys

from absl import flags

from research import launch

_CONFIG = launch.define_config_file(launch.default_config("search_digits.py"), "Search config.")
_SEARCH_DIR = flags.DEFINE_string("search_dir", "/tmp/search_digits", "Search directory.")


def main() -> int:
  from research.search import lock, master, validate
  config = _CONFIG.value
  search_dir = launch.checked_workdir(_SEARCH_DIR.value, "--search_dir")
  plan = launch.validated(validate.validate_search_config, config, search_dir)

  def log(message: str) -> None:
    print(message, flush=True)

  try:
    report = master.run_search(config, search_dir, log=log, plan=plan)
  except lock.SearchLocked as e:
    raise launch.UserError(str(e)) from None
  except master.SearchFailed as e:
    print(launch.error_line(str(e)), file=sys.stderr, flush=True)
    return launch.EXIT_FAILED
  except KeyboardInterrupt:
    print(f"\n[master] stopped; local workers stopped, their running trials will be retried. "
          f"Continue with the same command (--search_dir={search_dir}).", flush=True)
    return launch.EXIT_INTERRUPTED
  print("\n" + report.table)
  print("\nborder warnings:" if report.warnings else "\nborder warnings: none")
  for line in report.warnings:
    print("  " + line)
  for path in report.figures:
    print(f"figure: {path}")
  print(f"results: {os.path.join(report.search_dir, 'results.txt')}")
  print(f"trials: {os.path.join(report.search_dir, 'trials.csv')}")
  return launch.EXIT_OK


if __name__ == "__main__":
  launch.run(main, config=_CONFIG)
