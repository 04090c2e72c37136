r"""First- vs second-order rules, FULL BATCH: loss against wall time and evaluations
(research/train/full_batch.py).

    python3 scripts/second_order.py --config=configs/second_order_softmax.py \
        --workdir=/tmp/second_order_softmax
    python3 scripts/second_order.py --config=configs/second_order_mlp.py --workdir=/tmp/so \
        --config.second_order.methods=lbfgs,hessian_free --config.second_order.time_budget_s=5

Outputs in --workdir: loss_vs_time.png, loss_vs_evaluations.png, second_order.json.
Exit status: 0 done, 1 a user mistake.
"""
from absl import flags

from research import launch

_CONFIG = launch.define_config_file(launch.default_config("second_order_softmax.py"),
                                    "Experiment config (with a second_order group).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def main() -> int:
  from research.train import full_batch, validate_config
  config = _CONFIG.value
  workdir = launch.checked_workdir(_WORKDIR.value)
  launch.validated(validate_config, config)
  launch.validated(full_batch.validate_second_order_config, config)
  full_batch.compare_rules(config, workdir, log=lambda line: print(line, flush=True))
  return launch.EXIT_OK


if __name__ == "__main__":
  launch.run(main, config=_CONFIG, multiprocess=True)
