"""What the playbook's stopgaps became in the library: ``research.optim.get_cache``,
``research.train.make_members_eval_step``, ``research.monitor.stats.activation_layers``, and the
playbook's own ``engine.sweep`` (variants x seeds as one members program)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import optim, train
from research.monitor.stats import activation_layers
from research.playbook import engine
from tests.train_helpers import small_config

PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]], jnp.float32), "b": jnp.zeros(2, jnp.float32)}
GRADS = {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]], jnp.float32),
         "b": jnp.array([3.0, -0.5], jnp.float32)}


def _after_two_updates(tx):
  state = tx.init(PARAMS)
  for _ in range(2):
    _, state = tx.update(GRADS, state, PARAMS)
  return state


def test_get_cache_is_adagrads_sum_and_rmsprops_mean_of_squared_gradients():
  g2 = jax.tree.map(lambda g: np.asarray(g, np.float64) ** 2, GRADS)
  adagrad = optim.get_cache(_after_two_updates(optim.adagrad(0.1)))
  rmsprop = optim.get_cache(_after_two_updates(optim.rmsprop(0.1, decay_rate=0.9)))
  for name in PARAMS:
    np.testing.assert_allclose(adagrad[name], 2 * g2[name], rtol=1e-6)
    # 0.9 * (0.1 g^2) + 0.1 g^2 = 0.19 g^2
    np.testing.assert_allclose(rmsprop[name], 0.19 * g2[name], rtol=1e-6)


def test_get_cache_of_a_population_has_the_population_axis():
  stacked = jax.tree.map(lambda p: jnp.stack([p, 2 * p, 3 * p]), PARAMS)
  states = optim.init_population(optim.adagrad(0.1), stacked,
                                 {"learning_rate": jnp.array([0.1, 0.2, 0.3])})
  cache = optim.get_cache(states)
  assert cache["w"].shape == (3, 2, 2) and not np.any(np.asarray(cache["w"]))


@pytest.mark.parametrize("rule", [optim.sgd(0.1), optim.momentum(0.1), optim.adam(0.1)])
def test_get_cache_of_a_rule_without_one_names_the_rules_that_keep_it(rule):
  with pytest.raises(ValueError, match="no squared-gradient cache: only adagrad and rmsprop"):
    optim.get_cache(rule.init(PARAMS))


def test_members_eval_step_equals_each_members_own_evaluation():
  config = small_config(epochs=1, hidden=(16,))
  experiment = train.build_experiment(config)
  states = [train.init_state(experiment, seed=seed) for seed in range(3)]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[(s.params, s.batch_stats) for s in states])
  data = experiment.dataset
  members = train.evaluate(train.make_members_eval_step(experiment.model), *stacked,
                           data.x_val, data.y_val, 100)
  single = jax.jit(train.make_eval_step(experiment.model))
  for k, state in enumerate(states):
    alone = train.evaluate(single, state.params, state.batch_stats, data.x_val, data.y_val, 100)
    assert members["accuracy"][k] == alone["accuracy"]
    assert members["loss"][k] == pytest.approx(alone["loss"], rel=1e-6)
  assert members["loss"].shape == members["accuracy"].shape == (3,)


def test_activation_layers_in_natural_order_from_nested_sown_values():
  h0, h2, h10 = np.zeros((4, 3)), np.ones((4, 3)), np.full((4, 3), 2.0)
  sown = {"intermediates": {"MLP_0": {"act_10": (h10,), "act_2": (h2,)}, "act_0": (h0,)}}
  layers = activation_layers(sown)
  assert list(layers) == ["act_0", "act_2", "act_10"]
  np.testing.assert_array_equal(layers["act_10"], h10)
  assert list(activation_layers(sown["intermediates"])) == list(layers)


def test_sweep_lays_members_out_seed_major():
  base = engine.override(small_config(epochs=1, hidden=(8,)),
                         {"monitor.enabled": False, "monitor.figures": False,
                          "checkpoint.enabled": False, "data.subset": 200})
  lrs = (1e-3, 1e-2)
  runs = engine.sweep(base, [{"optimizer.learning_rate": lr} for lr in lrs], seeds=2)
  assert (runs.seeds, runs.size) == (2, 2)
  grid = runs.split([(c.seed, c.optimizer.learning_rate) for c in runs.result.configs])
  assert grid.tolist() == [[[0, 1e-3], [0, 1e-2]], [[1, 1e-3], [1, 1e-2]]]
  np.testing.assert_array_equal(runs.best_val(unfinished=0.1),
                                runs.result.best_val_accuracy.reshape(2, 2))
  assert runs.curves("val_accuracy", 3).shape == (2, 2, 3)
  assert np.isnan(runs.curves("val_accuracy", 3)[..., 1:]).all()   # one epoch, then the fill
  assert not runs.diverged().any()
