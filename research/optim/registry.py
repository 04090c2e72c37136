"""Build the update rule named in ``config.optimizer`` (see ``configs/default.py``).

``get_optimizer(opt_cfg, steps_per_epoch)`` returns ONE ``optax.inject_hyperparams`` transformation
around ``<rule>`` (``chain(weight_decay_rule, <rule>)`` when ``weight_decay != 0``). The rule's
config fields and checks come from the rule itself: the fields are the hyperparameters of its
public factory (``research.optim.adam`` etc.), which validates them. Its state's ``hyperparams``
holds

* ``learning_rate``: the base value ``opt_cfg.learning_rate``;
* ``lr_schedule``: the schedule's multiplier at the current epoch (``schedule(count //
  steps_per_epoch)`` with initial value 1; constant 1 for ``constant`` and ``plateau``);
* ``lr_scale``: the plateau multiplier, written by ``scale_learning_rate`` (1 until then);
* ``weight_decay`` (when non-zero) and the rule's own hyperparameters (``mu``, ``beta1``,
  ``beta2``, ``decay_rate``, ``eps``); ``mu`` follows the momentum schedule per epoch when that is
  enabled.

The rule uses ``learning_rate * lr_schedule * lr_scale`` (``get_learning_rate``).
"""
import inspect
from collections.abc import Callable
from typing import Any

import optax

from research.optim import rules, schedules, validation
from research.optim.hyperparams import inject, keyword_factory

#: name -> (public rule, plain rule). The public factory validates its hyperparameters (the one
#: place each check lives); the plain rule is what ``get_optimizer`` composes.
_RULES: dict[str, tuple[Callable[..., optax.GradientTransformation],
                        Callable[..., optax.GradientTransformation]]] = {
    "sgd": (rules.sgd, rules.sgd_rule),
    "momentum": (rules.momentum, rules.momentum_rule),
    "nesterov": (rules.nesterov, rules.nesterov_rule),
    "nesterov_lookahead": (rules.nesterov_lookahead, rules.nesterov_lookahead_rule),
    "adagrad": (rules.adagrad, rules.adagrad_rule),
    "rmsprop": (rules.rmsprop, rules.rmsprop_rule),
    "adam": (rules.adam, rules.adam_rule),
}

#: The rule names ``get_optimizer`` knows (``config.optimizer.name``).
OPTIMIZERS: tuple[str, ...] = tuple(_RULES)

_MOMENTUM_RULES = ("momentum", "nesterov", "nesterov_lookahead")


def _parameters(fn: Callable) -> list[str]:
  return [name for name in inspect.signature(fn).parameters if name != "learning_rate"]


def config_fields(name: str) -> tuple[str, ...]:
  """The ``config.optimizer`` fields rule ``name`` reads besides ``learning_rate``: the
  hyperparameters of its public factory that its plain rule takes (e.g. adam: beta1, beta2, eps,
  bias_correction)."""
  validation.check_choice("optimizer", name, OPTIMIZERS)
  public, plain = _RULES[name]
  return tuple(p for p in _parameters(public) if p in _parameters(plain))


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


def _configured_factory(rule: Callable[..., optax.GradientTransformation], names: tuple[str, ...],
                        weight_decay: bool):
  """Factory of ``rule(learning_rate * lr_schedule * lr_scale, ...)``, chained after the weight
  decay rule when ``weight_decay`` (a zero decay is left out: XLA would still compute
  ``g + 0 * x`` and read the parameters once more per update)."""

  def body(learning_rate, lr_schedule, lr_scale, weight_decay=None, mask=None, **rule_hyperparams):
    update = rule(learning_rate=learning_rate * lr_schedule * lr_scale, **rule_hyperparams)
    if weight_decay is None:
      return update
    return optax.chain(rules.weight_decay_rule(weight_decay, mask), update)

  extra = ("weight_decay", "mask") if weight_decay else ()
  return keyword_factory(body, ("learning_rate", "lr_schedule", "lr_scale") + extra + names)


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
    point; an L2 term in the loss is taken at the look-ahead point). For the ``plateau``
    schedule, see ``get_plateau``.

  Raises:
    ValueError: unknown rule or schedule name (the message lists the known ones), a
      hyperparameter outside its range, or a momentum schedule for a rule without momentum.
  """
  name = opt_cfg.name
  validation.check_choice("optimizer", name, OPTIMIZERS)
  validation.check_integer_at_least("steps_per_epoch", steps_per_epoch, 1)
  public, plain = _RULES[name]
  fields = config_fields(name)
  learning_rate = opt_cfg.learning_rate
  missing = [field for field in fields if _config_value(opt_cfg, field, None) is None]
  if missing:
    raise ValueError(f"optimizer {name!r} reads config.optimizer.{', '.join(missing)}, which the "
                     "config lacks (see configs/default.py)")
  rule_hyperparams = {field: _config_value(opt_cfg, field, None) for field in fields}
  public(learning_rate, **rule_hyperparams)  # the rule's own checks (values and types)
  weight_decay = _config_value(opt_cfg, "weight_decay", 0.0)
  validation.check_non_negative("weight_decay", weight_decay)

  momentum_cfg = _config_value(opt_cfg, "momentum_schedule", None)
  if momentum_cfg is not None and _config_value(momentum_cfg, "enabled", False):
    if name not in _MOMENTUM_RULES:
      raise ValueError(f"momentum_schedule.enabled applies to {', '.join(_MOMENTUM_RULES)}; "
                       f"optimizer is {name!r}")
    try:
      warmup = schedules.momentum_warmup(momentum_cfg.start, momentum_cfg.end,
                                         momentum_cfg.epochs)
    except ValueError as e:   # name the config fields (the schedule counts epochs here)
      raise ValueError("momentum_schedule." + str(e).replace("steps must", "epochs must")
                       ) from None
    rule_hyperparams["mu"] = _per_epoch(warmup, steps_per_epoch)
  plain_names = tuple(p for p in _parameters(plain) if p not in rule_hyperparams)
  if "next_mu" in plain_names:
    rule_hyperparams["next_mu"] = rules.next_count_schedule(rule_hyperparams["mu"])

  multiplier = learning_rate_multiplier(opt_cfg.schedule)
  lr_schedule = multiplier if not callable(multiplier) else _per_epoch(multiplier, steps_per_epoch)
  if _config_value(opt_cfg.schedule, "name", "constant") == "plateau":
    get_plateau(opt_cfg)  # validate factor / patience / mode now rather than after an epoch

  decay = {"weight_decay": weight_decay, "mask": rules.weights_only_mask} if weight_decay else {}
  return inject(_configured_factory(plain, tuple(rule_hyperparams), bool(weight_decay)),
                static_args=("mask",) if weight_decay else (), learning_rate=learning_rate,
                lr_schedule=lr_schedule, lr_scale=1.0, **decay, **rule_hyperparams)
