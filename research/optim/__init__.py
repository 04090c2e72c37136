"""research.optim: update rules as optax transformations, their schedules, and the registry.

Rules (each an ``optax.GradientTransformation`` whose ``update`` returns the delta to ADD):
``sgd``, ``momentum``, ``nesterov``, ``nesterov_lookahead``, ``adagrad``, ``rmsprop``, ``adam``,
and ``add_weight_decay`` (L2 on weights, ``weights_only_mask``). ``get_optimizer(config.optimizer,
steps_per_epoch)`` builds one from a config; hyperparameters live in the optimizer state
(``get_learning_rate``, ``scale_learning_rate``, ``set_hyperparams``, ``init_population``).
"""
from research.optim import schedules
from research.optim.hyperparams import (get_hyperparams, get_learning_rate, init_population,
                                        scale_learning_rate, set_hyperparams)
from research.optim.registry import OPTIMIZERS, get_optimizer, get_plateau
from research.optim.rules import (adagrad, adam, add_weight_decay, gradient_point, momentum,
                                  nesterov, nesterov_lookahead, rmsprop, sgd, weights_only_mask)
from research.optim.schedules import SCHEDULES, ReduceOnPlateau

__all__ = [
    "OPTIMIZERS", "SCHEDULES", "ReduceOnPlateau", "adagrad", "adam", "add_weight_decay",
    "get_hyperparams", "get_learning_rate", "get_optimizer", "get_plateau", "gradient_point",
    "init_population", "momentum", "nesterov", "nesterov_lookahead", "rmsprop",
    "scale_learning_rate", "schedules", "set_hyperparams", "sgd", "weights_only_mask",
]
