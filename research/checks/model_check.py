"""The gradient check of a configured experiment (what ``scripts/gradcheck.py`` runs).

``check_model_gradients(config) -> GradCheckReport``: the model of ``config.model`` on the data of
``config.data`` (``research.models.create_model``, ``research.data.load_dataset``), initialized
like a training run (``research.train.create_train_state``), with the training loss
(``research.train.make_loss_fn``: mean cross-entropy + ``0.5 * l2 * sum ||W||^2``) in training
mode (dropout on with one fixed key, batch norm on batch statistics), checked by
``research.checks.gradcheck.check_gradients`` on the first ``config.gradcheck.num_examples``
training examples:

* ``config.gradcheck.burn_in_steps`` updates of the configured rule
  (``research.optim.get_optimizer``) on the first ``config.train.batch_size`` training examples;
* with ``config.loss.l2 > 0`` and ``config.gradcheck.check_regularization_apart``, the data and
  regularization parts are checked apart (and a dominating regularization gradient is flagged).

``config.gradcheck`` fields: ``num_examples``, ``coords_per_leaf``, ``burn_in_steps``,
``check_regularization_apart`` (schema in ``configs/default.py``), and optionally any of
``OPTIONAL_FIELDS`` (forwarded to ``check_gradients``).
"""
from __future__ import annotations

from typing import Any

import jax

from research.checks.gradcheck import GradCheckReport, check_gradients

REQUIRED_FIELDS = ("num_examples", "coords_per_leaf", "burn_in_steps",
                   "check_regularization_apart")
OPTIONAL_FIELDS = ("h", "num_directions", "h_sweep", "full_leaf_size", "seed", "formula")


def _validate(gradcheck_cfg: Any) -> dict:
  """The check_gradients options of ``config.gradcheck`` (clear errors for bad values)."""
  fields = set(gradcheck_cfg.keys())
  unknown = sorted(fields - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
  if unknown:
    raise ValueError(f"unknown config.gradcheck field(s) {unknown}; allowed: "
                     f"{list(REQUIRED_FIELDS + OPTIONAL_FIELDS)}")
  missing = [name for name in REQUIRED_FIELDS if name not in fields]
  if missing:
    raise ValueError(f"config.gradcheck lacks {missing} (see configs/default.py)")
  for name, minimum in (("num_examples", 1), ("coords_per_leaf", 1), ("burn_in_steps", 0)):
    value = gradcheck_cfg[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
      raise ValueError(f"config.gradcheck.{name} must be an integer >= {minimum}, got {value!r}")
  if not isinstance(gradcheck_cfg.check_regularization_apart, bool):
    raise ValueError("config.gradcheck.check_regularization_apart must be True or False, got "
                     f"{gradcheck_cfg.check_regularization_apart!r}")
  options = {name: gradcheck_cfg[name] for name in OPTIONAL_FIELDS if name in fields}
  if "h_sweep" in options and not isinstance(options["h_sweep"], bool):
    options["h_sweep"] = tuple(options["h_sweep"])
  return options


def check_model_gradients(config: Any, dataset: Any = None) -> GradCheckReport:
  """Checks the gradient of the configured model and loss (see the module docstring).

  Args:
    config: an experiment config (``configs/default.py`` schema).
    dataset: an already loaded ``research.data.Dataset`` (default ``load_dataset(config.data)``).
  """
  from research.train import build_experiment, init_state, l2_penalty, make_loss_fn

  options = _validate(config.gradcheck)
  gc = config.gradcheck
  experiment = build_experiment(config, dataset)
  model, tx = experiment.model, experiment.tx
  state = init_state(experiment)   # the parameters and keys a training run starts from
  dropout_key = jax.random.fold_in(state.rng, 0)
  batch_size = experiment.batch_size
  x, y = experiment.dataset.x_train[:batch_size], experiment.dataset.y_train[:batch_size]

  l2 = float(config.loss.l2)
  apart = l2 > 0 and gc.check_regularization_apart
  objective = make_loss_fn(model, 0.0 if apart else l2)

  def loss_fn(params, batch_stats, x, y, key):
    loss, _ = objective(params, batch_stats, x, y, key, True)
    return loss

  regularization = (lambda params: l2 * l2_penalty(params)) if apart else None
  return check_gradients(
      loss_fn, state.params, state.batch_stats, x, y, dropout_key,
      batch_argnums=(1, 2), num_examples=int(gc.num_examples),
      coords_per_leaf=int(gc.coords_per_leaf), burn_in_steps=int(gc.burn_in_steps),
      optimizer=tx,
      optimizer_name=f"{config.optimizer.name} (lr {config.optimizer.learning_rate:g})",
      regularization=regularization,
      name=f"{config.model.name} on {config.data.name}", **options)
