r"""Trains a network and babysits it: the project's main job.

    python scripts/train.py                         # digits MLP + Adam (configs/default.py)
    python scripts/train.py --config=configs/default.py --workdir=runs/lr3e-3 \
        --config.optimizer.learning_rate=3e-3 --config.model.init=xavier
    python scripts/train.py --config=runs/lr3e-3/config.json --workdir=runs/lr3e-3   # resume

Every field of the config can be overridden with ``--config.<path>=<value>`` (``--print_config``
lists them). A ``--workdir`` that holds checkpoints is resumed (after a kill, the run ends with the
same parameters as an uninterrupted one). Without ``--workdir`` a fresh ``runs/<config>-<time>`` is
used. Outputs: ``metrics.jsonl``, TensorBoard events (``tensorboard/``), ``figures/*.png``,
``verdict.txt``, ``summary.json`` and ``checkpoints/`` (latest + best by validation accuracy).
On several processes (hosts) as one run: ``--coordinator_address``, ``--num_processes``,
``--process_id`` (or a TPU pod slice's / SLURM's environment); see research/train/README.md.
Exit status: 0 done, 1 a user mistake (bad config, flag or workdir; a checkpoint that does not
match), 2 diverged, 130 interrupted.
"""
import time

STARTED = time.time()   # before the imports: the run's wall time and phases include them

import os  # noqa: E402
import signal  # noqa: E402

from absl import flags  # noqa: E402

from research import launch  # noqa: E402
from research.launch.finished import finished_run_message  # noqa: E402

_CONFIG = launch.define_config_file(launch.default_config("default.py"), "Experiment config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory; resumed when it has checkpoints "
                               "(default: runs/<config>-<time>).")
_KILL_AFTER_EPOCH = flags.DEFINE_integer(
    "kill_after_epoch", 0, "Testing aid: SIGKILL this process after that epoch's checkpoint, to "
    "exercise resume-after-kill (0: never).")


def _default_workdir() -> str:
  return os.path.join("runs", f"{launch.config_name()}-{time.strftime('%Y%m%d-%H%M%S')}")


def main() -> int:
  config = _CONFIG.value
  workdir = launch.checked_workdir(_WORKDIR.value if _WORKDIR.present else _default_workdir())
  finished = finished_run_message(workdir, config)
  if finished:   # said at once, without loading JAX to train nothing
    print(finished, flush=True)
    return launch.EXIT_OK
  from research import train  # after flag parsing: --help stays fast
  from research.data import DataUnavailableError
  launch.validated(train.validate_config, config)
  on_epoch_end = None
  if _KILL_AFTER_EPOCH.value > 0:
    def on_epoch_end(epoch, record):
      del record
      if epoch + 1 == _KILL_AFTER_EPOCH.value:
        os.kill(os.getpid(), signal.SIGKILL)
  print(f"workdir: {workdir}", flush=True)
  try:
    train.train_and_evaluate(config, workdir, on_epoch_end=on_epoch_end,
                             log=lambda line: print(line, flush=True), started=STARTED)
  except train.DivergenceError as e:
    print(f"DIVERGED: {e}", flush=True)
    return launch.EXIT_FAILED
  except (ValueError, train.CheckpointError, train.ResumeError, DataUnavailableError) as e:
    raise launch.UserError(str(e)) from None
  except OSError as e:   # e.g. a file where the workdir needs a folder, a full disk
    raise launch.UserError(f"cannot write the run in {workdir}: {e}") from None
  return launch.EXIT_OK


if __name__ == "__main__":
  launch.run(main, config=_CONFIG, multiprocess=True)
