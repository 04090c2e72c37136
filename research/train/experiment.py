"""An experiment built from its config, once: data, model, update rule, plateau, steps per epoch.

``build_experiment(config)`` is the ONLY place that turns ``config.data`` / ``config.model`` /
``config.optimizer`` / ``config.train.batch_size`` into the objects a run trains with; the training
loop, the members trainer (seed ensembles, search populations, ablations), distillation, the sanity
checks, the gradient check and checkpoint restoration all start here, so they agree on the data,
the model, the rule and on how many updates an epoch has (``len(x_train) // batch_size``: the last
partial batch is dropped, so every step has the same shape and compiles once).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax

from research import data as data_lib, models, optim
from research.train.state import TrainState, create_train_state


class Experiment(NamedTuple):
  """What a config describes, built: everything a training step needs besides its state."""
  config: Any
  dataset: data_lib.Dataset
  model: Any                                  # flax linen module
  tx: Any                                     # optax.GradientTransformation (config.optimizer)
  plateau: optim.ReduceOnPlateau | None       # reduce-on-plateau, or None
  steps_per_epoch: int
  batch_size: int


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Updates per epoch: ``num_examples // batch_size`` (the last partial batch is dropped).

  Raises:
    ValueError: the batch is larger than the training set (no full batch at all).
  """
  steps = int(num_examples) // int(batch_size)
  if steps < 1:
    raise ValueError(f"config.train.batch_size={batch_size} is larger than the {num_examples} "
                     "training examples.")
  return steps


def build_experiment(config: Any, dataset: data_lib.Dataset | None = None, *,
                     steps_per_epoch_override: int | None = None) -> Experiment:
  """Data (``config.data``), model (``config.model``), rule (``config.optimizer``) of a config.

  Args:
    config: an experiment config (``configs/default.py`` schema).
    dataset: an already loaded data set (default: ``load_dataset(config.data)``).
    steps_per_epoch_override: the number of updates the schedules count as one epoch, when it
      is not the data's (the sanity check holds the schedule at its first epoch with it).

  Raises:
    ValueError: a bad config value (named, with what is allowed).
  """
  dataset = data_lib.load_dataset(config.data) if dataset is None else dataset
  batch_size = int(config.train.batch_size)
  steps = steps_per_epoch(len(dataset.x_train), batch_size)
  schedule_steps = steps if steps_per_epoch_override is None else int(steps_per_epoch_override)
  model = models.create_model(config.model, dataset.num_classes, dataset.image_shape)
  tx = optim.get_optimizer(config.optimizer, schedule_steps)
  return Experiment(config=config, dataset=dataset, model=model, tx=tx,
                    plateau=optim.get_plateau(config.optimizer), steps_per_epoch=steps,
                    batch_size=batch_size)


def init_state(experiment: Experiment, seed: int | None = None, config: Any = None
               ) -> TrainState:
  """A fresh train state of ``experiment`` for ``seed`` (default ``config.seed``).

  ``config`` (default the experiment's) may differ from the experiment's in what only the
  initialization reads (``model.init``, ``model.output_scale``, ``averaging``): the members trainer
  initializes each member from its own config and trains them all with one step.
  """
  config = experiment.config if config is None else config
  seed = int(config.seed) if seed is None else int(seed)
  model = experiment.model
  if config is not experiment.config:
    model = models.create_model(config.model, experiment.dataset.num_classes,
                                experiment.dataset.image_shape)
  return create_train_state(config, model, experiment.tx, jax.random.PRNGKey(seed),
                            experiment.dataset.input_shape, experiment.steps_per_epoch)
