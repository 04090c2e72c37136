"""research.optim: update rules as optax transformations, their schedules, and the registry.

Rules (each an ``optax.GradientTransformation`` whose ``update`` returns the delta to ADD):
``sgd``, ``momentum``, ``nesterov``, ``nesterov_lookahead``, ``adagrad``, ``rmsprop``, ``adam``,
and ``add_weight_decay`` (L2 on weights, ``weights_only_mask``). ``get_optimizer(config.optimizer,
steps_per_epoch)`` builds one from a config; hyperparameters live in the optimizer state
(``get_learning_rate``, ``scale_learning_rate``, ``set_hyperparams``, ``init_population``).
``update_and_apply(tx, grads, opt_state, params)`` is ``tx.update`` + ``optax.apply_updates`` in
one pass on CPU: fused C++ kernels, same bits (``research.optim.fused``; ``fused.status()``).

Second-order rules (``optax.GradientTransformationExtraArgs``: ``update`` also takes
``value_fn=loss`` and optionally ``value=``; see ``research.optim.second_order``): ``newton``
(dense Hessian, damped), ``hessian_free_newton`` (Hessian-vector products + conjugate gradient),
``lbfgs`` (two-loop recursion + zoom line search); ``evaluation_count`` reads the work each rule
did. The step that drives them (full batch or mini-batch) is ``research.train.make_step``.
"""
from research.optim import fused, schedules
from research.optim.fused import update_and_apply
from research.optim.hessian_free import hessian_free_newton
from research.optim.hyperparams import (get_hyperparams, get_learning_rate, init_population,
                                        scale_learning_rate, set_hyperparams)
from research.optim.hyperparams import get_cache  # AdaGrad/RMSProp's squared gradients
from research.optim.lbfgs import lbfgs
from research.optim.newton import newton
from research.optim.registry import OPTIMIZERS, get_optimizer, get_plateau
from research.optim.rules import (adagrad, adam, add_weight_decay, gradient_point, momentum,
                                  nesterov, nesterov_lookahead, rmsprop, sgd, weights_only_mask)
from research.optim.schedules import SCHEDULES, ReduceOnPlateau
from research.optim.second_order import evaluation_count

__all__ = [
    "OPTIMIZERS", "SCHEDULES", "ReduceOnPlateau", "adagrad", "adam", "add_weight_decay",
    "evaluation_count", "fused", "get_hyperparams", "get_learning_rate", "get_optimizer",
    "get_plateau", "gradient_point", "hessian_free_newton", "init_population", "lbfgs", "momentum",
    "nesterov", "nesterov_lookahead", "newton", "rmsprop", "scale_learning_rate", "schedules",
    "set_hyperparams", "sgd", "update_and_apply", "weights_only_mask",
    "get_cache",
]
