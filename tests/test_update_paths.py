"""Every path that takes an update step runs the same algorithm as the training step.

The train step, the members trainer (seed ensembles, search populations), distillation, the
sanity overfit check and the gradient check's burn-in all take their updates through
``research.train.apply_update``. For the same rule, batch and starting point, two updates on each
path must give the training step's parameters, for every rule, the Nesterov look-ahead form
included (whose gradient is taken at ``x + mu * v``: a path that ignored ``gradient_point`` would
drift from the second update on, which the last test shows this comparison would catch).
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import data, optim, train
from research.checks import model_check, sanity
from research.ensemble import distill
from research.train import members
from tests.train_helpers import small_config

# One rule of each kind of state: none, a velocity (with the look-ahead gradient point), two
# moments with a step count.
RULES = {
    "sgd": {"learning_rate": 0.1},
    "nesterov_lookahead": {"learning_rate": 0.05, "mu": 0.9},
    "adam": {"learning_rate": 1e-2},
}
STEPS = 2


@pytest.fixture(scope="module")
def dataset():
  return data.load_dataset(small_config().data)


def _config(name):
  config = small_config(epochs=1)
  config.optimizer.name = name
  for field, value in RULES[name].items():
    config.optimizer[field] = value
  config.loss.l2 = 1e-3          # the regularization part goes through the same update
  config.gradcheck.burn_in_steps = STEPS
  config.gradcheck.num_examples = 1
  config.gradcheck.coords_per_leaf = 1
  with config.gradcheck.unlocked():
    config.gradcheck.num_directions = 0   # the burn-in is what is compared here
  return config


def _train_step_reference(experiment, x, y):
  step = jax.jit(train.make_train_step(experiment.model, experiment.tx, experiment.config))
  state = train.init_state(experiment)
  for _ in range(STEPS):
    state, _ = step(state, x, y)
  return state


def _close(a, b):
  chex.assert_trees_all_close(jax.device_get(a), jax.device_get(b), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_update_path_equals_the_train_step(name, dataset):
  config = _config(name)
  experiment = train.build_experiment(config, dataset)
  x = jnp.asarray(dataset.x_train[:experiment.batch_size])
  y = jnp.asarray(dataset.y_train[:experiment.batch_size])
  reference = _train_step_reference(experiment, x, y)
  loss_fn = train.make_loss_fn(experiment.model, float(config.loss.l2))

  # Members: the vmapped step of train_members, one member.
  member_step = jax.jit(members.make_member_step(
      train.make_train_step(experiment.model, experiment.tx, config), False, False))
  stacked = members.stack([train.init_state(experiment)])
  for _ in range(STEPS):
    stacked, _ = member_step(stacked, jnp.zeros(1), jnp.zeros(1), x[None], y[None])
  _close(members.unstack(stacked.params, 0), reference.params)

  # Distillation with alpha = 0 (hard labels only: the training loss).
  distill_step = jax.jit(distill.make_distill_step(experiment.model, experiment.tx, 2.0, 0.0,
                                                   float(config.loss.l2)))
  student = train.init_state(experiment)
  uniform = jnp.full((len(y), experiment.dataset.num_classes), 0.1)
  for _ in range(STEPS):
    student, _ = distill_step(student, x, y, uniform)
  _close(student.params, reference.params)

  # Sanity overfit check: its final loss is the data loss at the train step's parameters.
  start = train.init_state(experiment)
  check = sanity.check_overfit_subset(loss_fn, experiment.tx, start.params, start.batch_stats,
                                      x, y, STEPS, start.rng)
  _, aux = loss_fn(reference.params, reference.batch_stats, x, y, start.rng, False)
  assert check.figures["final_loss"] == pytest.approx(float(aux["data_loss"]), rel=1e-5)

  # Gradient check burn-in (scripts/gradcheck.py): its loss after the burn-in is the training
  # loss at the train step's parameters (same batch, same dropout key).
  report = model_check.check_model_gradients(config, dataset)
  total, _ = loss_fn(reference.params, reference.batch_stats, x, y,
                     jax.random.fold_in(start.rng, 0), True)
  assert report.burn_in.steps == STEPS
  assert report.burn_in.loss_after == pytest.approx(float(total), rel=1e-5)


def test_a_step_that_ignores_the_lookahead_point_would_be_caught(dataset):
  """The comparison above is sensitive: the plain-momentum gradient point differs after one
  update of the look-ahead form, so the second update lands elsewhere."""
  config = _config("nesterov_lookahead")
  experiment = train.build_experiment(config, dataset)
  x = jnp.asarray(dataset.x_train[:experiment.batch_size])
  y = jnp.asarray(dataset.y_train[:experiment.batch_size])
  reference = _train_step_reference(experiment, x, y)
  loss_fn = train.make_loss_fn(experiment.model, float(config.loss.l2))
  state = train.init_state(experiment)

  @jax.jit
  def drifting_step(params, opt_state):  # the drift fixed here: gradient at params, not
    grads = jax.grad(                     # at gradient_point(params, opt_state)
        lambda p: loss_fn(p, state.batch_stats, x, y, state.rng, True)[0])(params)
    updates, opt_state = experiment.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = state.params, state.opt_state
  for _ in range(STEPS):
    params, opt_state = drifting_step(params, opt_state)
  difference = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(params), jax.tree.leaves(reference.params)))
  assert difference > 1e-4
  assert optim.gradient_point(params, opt_state) is not params
