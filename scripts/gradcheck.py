r"""Gradient check of the configured model and loss (see research/checks/model_check.py).

    python scripts/gradcheck.py                                   # configs/default.py
    python scripts/gradcheck.py --config=configs/default.py --config.gradcheck.burn_in_steps=50 \
        --config.loss.l2=1e-3 --config.gradcheck.coords_per_leaf=20

Checks on the first ``config.gradcheck.num_examples`` training examples, after
``config.gradcheck.burn_in_steps`` updates of the configured rule, with the data and
regularization parts apart when ``config.gradcheck.check_regularization_apart`` and
``config.loss.l2 > 0``. Prints the per-leaf table; exits 1 when any leaf (or part) fails and 2
on bad input (the message names the bad value and what is allowed).
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
  from research.checks.model_check import check_model_gradients  # pylint: disable=g-import-not-at-top
  try:
    report = check_model_gradients(_CONFIG.value)
  except (ValueError, TypeError) as error:
    print(f"gradcheck: bad input: {error}", file=sys.stderr)
    return 2
  print(report)
  sys.stdout.flush()
  return 0 if report.ok else 1


if __name__ == "__main__":
  app.run(main)
