"""research.train: jit-compiled, data-parallel training with checkpoints and babysitting.

``train_and_evaluate(config, workdir)`` is the main job (see :mod:`research.train.loop`); its parts
are public so other capabilities reuse the very same step: ``make_loss_fn``, ``make_train_step``,
``make_eval_step``, ``create_train_state``, ``TrainState``, ``epoch_permutation``,
``checkpoints`` (orbax, latest + best), ``DataParallel`` (mesh over local devices).
"""
from research.train import checkpoints
from research.train.checkpoints import CheckpointError
from research.train.config_checks import validate_config
from research.train.loop import DivergenceError, TrainResult, evaluate, train_and_evaluate
from research.train.losses import cross_entropy, l2_penalty, make_loss_fn
from research.train.parallel import DataParallel
from research.train.state import TrainState, create_train_state, epoch_permutation
from research.train.steps import make_eval_step, make_train_step

__all__ = [
    "CheckpointError", "DataParallel", "DivergenceError", "TrainResult", "TrainState",
    "checkpoints", "create_train_state", "cross_entropy", "epoch_permutation", "evaluate",
    "l2_penalty", "make_eval_step", "make_loss_fn", "make_train_step", "train_and_evaluate",
    "validate_config",
]
