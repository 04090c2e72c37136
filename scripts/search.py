r"""Hyperparameter search: master of a coarse-to-fine search with local workers.

    python scripts/search.py                                   # small search on digits, 2 workers
    python scripts/search.py --config=configs/search_digits.py --search_dir=/tmp/s \
        --config.search.num_workers=3 --config.search.stage_trials="(24,8,4)"

Stopping it (Ctrl-C, or SIGTERM from a scheduler) stops its local workers; their running trials
are failed and retried, and running it again with the same --search_dir continues the search.
Prints the ranked table, the border warnings and the figure paths; everything is also in
<search_dir>/results.txt, the trials in <search_dir>/trials (``ls | sort`` ranks them), the store
in <search_dir>/study.db.
"""
from __future__ import annotations

import os
import signal

from absl import app, flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from research.launch import default_config, define_config_file  # noqa: E402

_CONFIG = define_config_file(default_config("search_digits.py"),
                             "Search config.")
_SEARCH_DIR = flags.DEFINE_string("search_dir", "/tmp/search_digits", "Search directory.")


def _stop_on_sigterm(signum, frame):
  # A scheduler's SIGTERM must run the master's cleanup (stop the local workers) like Ctrl-C does.
  del signum, frame
  raise KeyboardInterrupt


def main(argv):
  del argv
  signal.signal(signal.SIGTERM, _stop_on_sigterm)
  from research.search import master
  try:
    report = master.run_search(_CONFIG.value, _SEARCH_DIR.value,
                               log=lambda m: print(m, flush=True))
  except KeyboardInterrupt:
    print(f"\n[master] stopped; local workers stopped, their running trials will be retried. "
          f"Continue with the same command (--search_dir={_SEARCH_DIR.value}).", flush=True)
    return 130
  print("\n" + report.table)
  print("\nborder warnings:" if report.warnings else "\nborder warnings: none")
  for line in report.warnings:
    print("  " + line)
  for path in report.figures:
    print(f"figure: {path}")
  print(f"results: {os.path.join(report.search_dir, 'results.txt')}")


if __name__ == "__main__":
  app.run(main)
