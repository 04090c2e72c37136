r"""Ensembles of every kind, their accuracy against K, and distillation into one student
(research/ensemble/study.py).

    python3 scripts/ensemble.py --config=configs/ensemble_digits.py --workdir=/tmp/ens_digits
    python3 scripts/ensemble.py --config=configs/ensemble_digits.py --workdir=/tmp/ens \
        --config.ensemble.kinds=topk --config.ensemble.workdirs=/tmp/search_dir

Kinds (``config.ensemble.kinds``): seeds, checkpoints, averages, topk; with
``config.distill.enabled`` the seed ensemble is distilled into one student. Outputs in --workdir:
ensemble.json, ensemble.txt, figures/ensemble_accuracy_vs_k.png, snapshots/ (and with
``config.ensemble.repeats > 1``: rep_<r>/, summary.txt, summary.json, the mean figure).
Exit status: 0 done, 1 a user mistake.
"""
from absl import flags

from research import launch

_CONFIG = launch.define_config_file(launch.default_config("ensemble_digits.py"),
                                    "Experiment config (with ensemble and distill groups).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def main() -> int:
  from research.ensemble import study
  from research.train import validate_config
  config = _CONFIG.value
  workdir = launch.checked_workdir(_WORKDIR.value)
  launch.validated(validate_config, config)
  launch.validated(study.validate_study_config, config)
  study.run_repeats(config, workdir, log=lambda line: print(line, flush=True))
  return launch.EXIT_OK


if __name__ == "__main__":
  launch.run(main, config=_CONFIG, multiprocess=True)
