"""research.train: the one training engine; every capability that trains calls it.

* :mod:`~research.train.experiment` ``build_experiment(config)``: data, model, update rule,
  reduce-on-plateau and steps per epoch of a config; ``init_state``.
* :mod:`~research.train.update`     ``apply_update``: THE update step (``gradient_point`` for the
  Nesterov look-ahead form, ``value_fn`` for second-order rules); ``make_step`` for a plain loss.
* :mod:`~research.train.steps`      ``make_train_step`` / ``make_eval_step`` (jitted, donated).
* :mod:`~research.train.evaluation` ``evaluate`` / ``predict``: batched, one model or K members
  (``make_members_eval_step``).
* :mod:`~research.train.members`    ``train_members``: K models (seeds, hyperparameters, init
  scales) stacked and trained in one compiled program (seed ensembles, search populations).
* :mod:`~research.train.loop`       ``train_and_evaluate(config, workdir)``: the main job.
* :mod:`~research.train.checkpoints` orbax checkpoints (latest + best), ``restore_best``;
  :mod:`~research.train.resume` (saved config, records); :mod:`~research.train.summary`.

Heavy parts (orbax, the loop) load on first use, so ``import research.train`` stays cheap.
"""
import importlib

from research.train.config_checks import validate_config
from research.train.evaluation import evaluate, make_members_eval_step, predict
from research.train.experiment import Experiment, build_experiment, init_state, steps_per_epoch
from research.train.losses import cross_entropy, l2_penalty, make_loss_fn
from research.train.parallel import DataParallel
from research.train.state import TrainState, create_train_state, epoch_permutation
from research.train.steps import make_eval_step, make_train_step, make_update_step
from research.train.toy import toy_paths
from research.train.update import Update, apply_update, make_step

_LAZY = {
    "checkpoints": ("research.train.checkpoints", None),
    "CheckpointError": ("research.train.checkpoints", "CheckpointError"),
    "restore_best": ("research.train.checkpoints", "restore_best"),
    "DivergenceError": ("research.train.loop", "DivergenceError"),
    "TrainResult": ("research.train.loop", "TrainResult"),
    "train_and_evaluate": ("research.train.loop", "train_and_evaluate"),
    "ResumeError": ("research.train.resume", "ResumeError"),
    "MembersResult": ("research.train.members", "MembersResult"),
    "train_members": ("research.train.members", "train_members"),
}


def __getattr__(name: str):
  if name not in _LAZY:
    raise AttributeError(f"module 'research.train' has no attribute {name!r}")
  module_name, attribute = _LAZY[name]
  module = importlib.import_module(module_name)
  return module if attribute is None else getattr(module, attribute)


__all__ = [
    "CheckpointError", "DataParallel", "DivergenceError", "Experiment", "MembersResult",
    "ResumeError", "TrainResult", "TrainState", "Update", "apply_update", "build_experiment",
    "checkpoints", "create_train_state", "cross_entropy", "epoch_permutation", "evaluate",
    "init_state", "l2_penalty", "make_eval_step", "make_loss_fn", "make_members_eval_step",
    "make_step", "make_train_step", "make_update_step", "predict", "restore_best",
    "steps_per_epoch", "toy_paths", "train_and_evaluate", "train_members",
    "validate_config",
]
