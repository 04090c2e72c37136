"""The train state: one pytree holding everything a run needs to continue exactly.

``TrainState(step, params, batch_stats, opt_state, rng, averages)`` — the optimizer's
hyperparameters (learning rate, its schedule and plateau scale, momentum) live inside
``opt_state``, and the dropout key of step ``t`` is ``fold_in(rng, t)``, so a state restored from a
checkpoint continues bit for bit, and a stack of states can be ``vmap``-ped (K seeds, populations).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from research.averaging import init_averages_from_config


@flax.struct.dataclass
class TrainState:
  """Step counter, parameters, batch-norm statistics, optimizer state, PRNG key, averages."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  averages: Any = None


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order of the ``n`` training examples in epoch ``epoch`` (0-based) of a run with ``seed``.

  A pure function of ``(seed, epoch)``: a resumed run and the K-seed vmapped runner see the same
  batches as an uninterrupted single run.
  """
  return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


def make_init(config: Any, model, tx, dataset_or_shape: Any,
              steps_per_epoch: int | None = None) -> Callable[[jax.Array], TrainState]:
  """``init(rng) -> TrainState``: a fresh state, parameters initialized from ``rng``, optimizer
  and averages started (pure: jit it, or vmap it over a stack of keys).

  Args:
    config: experiment config (reads ``config.averaging`` and ``config.train.batch_size``).
    model: the linen module.
    tx: the update rule (``optax.GradientTransformation``).
    dataset_or_shape: a ``research.data.Dataset`` (its ``input_shape``) or one example's shape.
    steps_per_epoch: for the Polyak start step; default from the data set and batch size.
  """
  input_shape = tuple(getattr(dataset_or_shape, "input_shape", dataset_or_shape))
  if steps_per_epoch is None:
    x_train = getattr(dataset_or_shape, "x_train", None)
    steps_per_epoch = (len(x_train) // int(config.train.batch_size)) if x_train is not None else 1
  averaging_cfg, polyak_steps = config.averaging, max(1, int(steps_per_epoch))

  def init(rng: jax.Array) -> TrainState:
    init_rng, dropout_rng, run_rng = jax.random.split(rng, 3)
    variables = model.init({"params": init_rng, "dropout": dropout_rng},
                           jnp.zeros((1,) + input_shape, jnp.float32), train=False)
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      rng=run_rng, averages=init_averages_from_config(params, averaging_cfg,
                                                                      polyak_steps))

  return init


def create_train_state(config: Any, model, tx, rng: jax.Array, dataset_or_shape: Any,
                       steps_per_epoch: int | None = None) -> TrainState:
  """A fresh state: ``make_init(...)(rng)`` as one compiled program (see :func:`make_init`).

  One program instead of dozens of eager initializer ops (each one a compilation). Its outputs
  are distinct buffers, as the donating train step needs (XLA refuses to donate a buffer that
  appears twice in the state).
  """
  return jax.jit(make_init(config, model, tx, dataset_or_shape, steps_per_epoch))(rng)
