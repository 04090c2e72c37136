r"""Trains a network and babysits it: the project's main job.

    python scripts/train.py                                   # digits MLP + Adam (configs/default.py)
    python scripts/train.py --config=configs/default.py --workdir=runs/lr3e-3 \
        --config.optimizer.learning_rate=3e-3 --config.model.init=xavier

Every field of the config can be overridden with ``--config.<path>=<value>``. A ``--workdir`` that
holds checkpoints is resumed (after a kill, the run ends with the same parameters as an
uninterrupted one). Without ``--workdir`` a fresh ``runs/<config>-<time>`` is used. Outputs:
``metrics.jsonl``, TensorBoard events (``tensorboard/``), ``figures/*.png``, ``verdict.txt``,
``summary.json`` and ``checkpoints/`` (latest + best by validation accuracy).
Exit status: 0 done, 1 bad config / checkpoint error, 2 diverged.
"""
import os
import signal
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from research.launch import define_config_file  # noqa: E402

define_config_file(os.path.join(REPO, "configs", "default.py"),
                   "Experiment config file (a get_config() python file).",
                   bad_config_status=1)  # 2 means "diverged" here
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory; resumed when it has checkpoints.")
_KILL_AFTER_EPOCH = flags.DEFINE_integer(
    "kill_after_epoch", 0, "Testing aid: SIGKILL this process after that epoch's checkpoint, to "
    "exercise resume-after-kill (0: never).")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from research import train  # pylint: disable=g-import-not-at-top  (after flag parsing)
  config = flags.FLAGS.config
  workdir = _WORKDIR.value
  if workdir is None:
    name = os.path.splitext(os.path.basename(config_flags.get_config_filename(
        flags.FLAGS["config"])))[0]
    workdir = os.path.join(REPO, "runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
  on_epoch_end = None
  if _KILL_AFTER_EPOCH.value > 0:
    def on_epoch_end(epoch, record):  # pylint: disable=function-redefined
      del record
      if epoch + 1 == _KILL_AFTER_EPOCH.value:
        os.kill(os.getpid(), signal.SIGKILL)
  print(f"workdir: {os.path.abspath(workdir)}", flush=True)
  try:
    train.train_and_evaluate(config, workdir, on_epoch_end=on_epoch_end,
                             log=lambda line: print(line, flush=True))
  except train.DivergenceError as e:
    print(f"DIVERGED: {e}", file=sys.stderr)
    return 2
  except (ValueError, train.CheckpointError) as e:
    print(f"ERROR: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  app.run(main)
