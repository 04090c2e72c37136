r"""Gradient check of the configured model and loss (see research/checks/model_check.py).

    python scripts/gradcheck.py                                   # configs/default.py
    python scripts/gradcheck.py --config=configs/default.py --config.gradcheck.burn_in_steps=50 \
        --config.loss.l2=1e-3 --config.gradcheck.coords_per_leaf=20

Checks on the first ``config.gradcheck.num_examples`` training examples, after
``config.gradcheck.burn_in_steps`` updates of the configured rule, with the data and
regularization parts apart when ``config.gradcheck.check_regularization_apart`` and
``config.loss.l2 > 0``. Prints the per-leaf table. Exit status: 0 every leaf passed, 1 a user
mistake (the message names the bad value and what is allowed), 2 a leaf, direction or part failed.
"""
from research import launch

_CONFIG = launch.define_config_file(launch.default_config("default.py"), "Experiment config.")


def main() -> int:
  from research.checks.model_check import check_model_gradients
  report = launch.validated(check_model_gradients, _CONFIG.value)
  print(report, flush=True)
  return launch.EXIT_OK if report.ok else launch.EXIT_FAILED


if __name__ == "__main__":
  launch.run(main, config=_CONFIG, multiprocess=True)
