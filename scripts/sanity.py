r"""Sanity checks before an expensive run: initial loss ~ ln(C), regularization raises the loss,
the model overfits a tiny subset (see research/checks/sanity.py).

    python scripts/sanity.py                                  # configs/default.py
    python scripts/sanity.py --config=configs/default.py --config.model.init=unit

Prints the three checks with their figures. Exit status: 0 all passed, 1 a user mistake (bad
config), 2 a check failed.
"""
from research import launch

_CONFIG = launch.define_config_file(launch.default_config("default.py"), "Experiment config.")


def main() -> int:
  from research.checks import sanity
  from research.train import validate_config
  config = _CONFIG.value
  launch.validated(validate_config, config)
  launch.validated(sanity.validate_sanity_config, config.sanity)
  report = launch.validated(sanity.run_sanity_checks, config)
  print(report.format(), flush=True)
  return launch.EXIT_OK if report.passed else launch.EXIT_FAILED


if __name__ == "__main__":
  launch.run(main, config=_CONFIG, multiprocess=True)
