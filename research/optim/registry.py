"""Build the update rule named in ``config.optimizer`` (see ``configs/default.py``).

``get_optimizer(opt_cfg, steps_per_epoch)`` returns ONE ``optax.inject_hyperparams`` transformation
around ``chain(weight_decay_rule, <rule>)``. Its state's ``hyperparams`` holds

* ``learning_rate``: the base value ``opt_cfg.learning_rate``;
* ``lr_schedule``: the schedule's multiplier at the current epoch (``schedule(count //
  steps_per_epoch)`` with initial value 1; constant 1 for ``constant`` and ``plateau``);
* ``lr_scale``: the plateau multiplier, written by ``scale_learning_rate`` (1 until then);
* ``weight_decay`` and the rule's own hyperparameters (``mu``, ``beta1``, ``beta2``, ``decay_rate``,
  ``eps``); ``mu`` follows the momentum schedule per epoch when that is enabled.

The rule uses ``learning_rate * lr_schedule * lr_scale`` (``get_learning_rate``).
"""
from collections.abc import Callable
from typing import Any

import optax

from research.optim import rules, schedules, validation
from research.optim.hyperparams import inject, keyword_factory

#: name -> (plain rule, the config fields it reads besides the learning rate)
_RULES: dict[str, tuple[Callable[..., optax.GradientTransformation], tuple[str, ...]]] = {
    "sgd": (rules.sgd_rule, ()),
    "momentum": (rules.momentum_rule, ("mu",)),
    "nesterov": (rules.nesterov_rule, ("mu",)),
    "nesterov_lookahead": (rules.nesterov_lookahead_rule, ("mu", "next_mu")),
    "adagrad": (rules.adagrad_rule, ("eps",)),
    "rmsprop": (rules.rmsprop_rule, ("decay_rate", "eps")),
    "adam": (rules.adam_rule, ("beta1", "beta2", "eps", "bias_correction")),
}

#: The rule names ``get_optimizer`` knows (``config.optimizer.name``).
OPTIMIZERS: tuple[str, ...] = tuple(_RULES)

_MOMENTUM_RULES = ("momentum", "nesterov", "nesterov_lookahead")

_CHECKS = {
    "mu": validation.check_unit_interval,
    "beta1": validation.check_unit_interval,
    "beta2": validation.check_unit_interval,
    "decay_rate": validation.check_unit_interval,
    "eps": validation.check_positive,
}


def _config_value(opt_cfg: Any, name: str, default: Any) -> Any:
  getter = getattr(opt_cfg, "get", None)
  return getter(name, default) if getter is not None else getattr(opt_cfg, name, default)


def learning_rate_multiplier(schedule_cfg: Any) -> Callable[[Any], Any] | float:
  """The learning-rate schedule of ``config.optimizer.schedule`` as a multiplier of the EPOCH
  (value 1 at epoch 0), or the number 1.0 for ``constant`` / ``plateau``."""
  name = _config_value(schedule_cfg, "name", "constant")
  validation.check_choice("learning-rate schedule", name, schedules.SCHEDULES)
  if name in ("constant", "plateau"):
    return 1.0
  if name == "step":
    return schedules.step_decay(1.0, schedule_cfg.factor, schedule_cfg.every)
  if name == "exponential":
    return schedules.exponential_decay(1.0, schedule_cfg.k)
  return schedules.inverse_time_decay(1.0, schedule_cfg.k)


def get_plateau(opt_cfg: Any) -> schedules.ReduceOnPlateau | None:
  """The ``ReduceOnPlateau`` of ``config.optimizer.schedule`` when its name is ``plateau``, else
  None. The training loop feeds it the validation metric each epoch and passes ``state.scale`` to
  ``scale_learning_rate``."""
  schedule_cfg = opt_cfg.schedule
  if _config_value(schedule_cfg, "name", "constant") != "plateau":
    return None
  return schedules.ReduceOnPlateau(factor=schedule_cfg.factor, patience=schedule_cfg.patience,
                                   min_delta=schedule_cfg.min_delta, mode=schedule_cfg.mode)


def _per_epoch(schedule: Callable[[Any], Any], steps_per_epoch: int) -> Callable[[Any], Any]:
  return lambda count: schedule(count // steps_per_epoch)


def _configured_factory(rule: Callable[..., optax.GradientTransformation], names: tuple[str, ...]):
  """Factory of ``chain(weight_decay_rule, rule(learning_rate * lr_schedule * lr_scale, ...))``."""

  def body(learning_rate, lr_schedule, lr_scale, weight_decay, mask, **rule_hyperparams):
    return optax.chain(
        rules.weight_decay_rule(weight_decay, mask),
        rule(learning_rate=learning_rate * lr_schedule * lr_scale, **rule_hyperparams))

  return keyword_factory(
      body, ("learning_rate", "lr_schedule", "lr_scale", "weight_decay", "mask") + names)


def get_optimizer(opt_cfg: Any, steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
  """The update rule ``opt_cfg.name`` with its schedules and weight decay (weights only).

  Args:
    opt_cfg: ``config.optimizer`` (fields as in ``configs/default.py``).
    steps_per_epoch: updates per epoch; schedules advance once per epoch
      (``epoch = update_count // steps_per_epoch``).

  Returns:
    An ``optax`` transformation whose state keeps every numeric hyperparameter (see module doc).
    For ``nesterov_lookahead`` evaluate gradients at ``research.optim.gradient_point(params,
    opt_state)`` (the optimizer's own weight decay is taken at ``params``, not at the look-ahead
    point; an L2 term in the loss is taken at the look-ahead point). For the ``plateau`` schedule, see ``get_plateau``.

  Raises:
    ValueError: unknown rule or schedule name (the message lists the known ones), a
      hyperparameter outside its range, or a momentum schedule for a rule without momentum.
  """
  name = opt_cfg.name
  validation.check_choice("optimizer", name, OPTIMIZERS)
  validation.check_integer_at_least("steps_per_epoch", steps_per_epoch, 1)
  rule, names = _RULES[name]

  learning_rate = opt_cfg.learning_rate
  validation.check_non_negative("learning_rate", learning_rate)
  weight_decay = _config_value(opt_cfg, "weight_decay", 0.0)
  validation.check_non_negative("weight_decay", weight_decay)

  rule_hyperparams = {}
  for field in names:
    if field == "next_mu":
      continue  # derived from mu below
    value = getattr(opt_cfg, field)
    if field in _CHECKS:
      _CHECKS[field](field, value)
    rule_hyperparams[field] = value
  bias_correction = rule_hyperparams.get("bias_correction", True)
  if not isinstance(bias_correction, bool):
    raise ValueError(f"bias_correction must be True or False, got {bias_correction!r}")

  momentum_cfg = _config_value(opt_cfg, "momentum_schedule", None)
  if momentum_cfg is not None and _config_value(momentum_cfg, "enabled", False):
    if name not in _MOMENTUM_RULES:
      raise ValueError(f"momentum_schedule.enabled applies to {', '.join(_MOMENTUM_RULES)}; "
                       f"optimizer is {name!r}")
    warmup = schedules.momentum_warmup(momentum_cfg.start, momentum_cfg.end, momentum_cfg.epochs)
    rule_hyperparams["mu"] = _per_epoch(warmup, steps_per_epoch)
  if "next_mu" in names:
    rule_hyperparams["next_mu"] = rules.next_count_schedule(rule_hyperparams["mu"])

  multiplier = learning_rate_multiplier(opt_cfg.schedule)
  lr_schedule = multiplier if not callable(multiplier) else _per_epoch(multiplier, steps_per_epoch)
  if _config_value(opt_cfg.schedule, "name", "constant") == "plateau":
    get_plateau(opt_cfg)  # validate factor / patience / mode now rather than after an epoch

  return inject(_configured_factory(rule, names), static_args=("mask",),
                learning_rate=learning_rate, lr_schedule=lr_schedule, lr_scale=1.0,
                weight_decay=weight_decay, mask=rules.weights_only_mask, **rule_hyperparams)
