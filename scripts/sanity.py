r"""Sanity checks before an expensive run: initial loss ~ ln(C), regularization raises the loss,
the model overfits a tiny subset (see research/checks/sanity.py).

    python scripts/sanity.py                                  # configs/default.py
    python scripts/sanity.py --config=configs/default.py --config.model.init=unit

Prints the three checks with their figures; the exit status is 1 when any check fails.
"""
import os
import sys

from absl import app

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)  # the repo, so a checkout runs without installing

from research.launch import define_config_file  # noqa: E402

_DEFAULT_CONFIG = os.path.join(_ROOT, "configs", "default.py")
_CONFIG = define_config_file(_DEFAULT_CONFIG, "Experiment config file (get_config()).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from research.checks import sanity  # pylint: disable=g-import-not-at-top
  report = sanity.run_sanity_checks(_CONFIG.value)
  print(report.format())
  sys.stdout.flush()
  return 0 if report.passed else 1


if __name__ == "__main__":
  app.run(main)
