"""research.optim.get_optimizer: every configured rule builds, runs under jit, keeps its
hyperparameters in the state (plateau scaling without recompiling, populations under vmap)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from research import optim


def _params():
  return {"dense": {"kernel": jnp.ones((3, 2), jnp.float32), "bias": jnp.zeros((2,), jnp.float32)}}


def _grads(params):
  return jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)


def _cfg(**overrides):
  cfg = default.get_config().optimizer
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_configured_rule_steps_under_jit(name):
  tx = optim.get_optimizer(_cfg(name=name, learning_rate=0.1), steps_per_epoch=5)
  params = _params()
  state = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(_grads(p), s, p))
  deltas, state = step(params, state)
  new_params = optax.apply_updates(params, deltas)
  assert jax.tree.structure(new_params) == jax.tree.structure(params)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new_params))
  # The gradient is positive everywhere, so every rule moves every coordinate down.
  assert all(np.all(np.asarray(d) < 0) for d in jax.tree.leaves(deltas))
  np.testing.assert_allclose(optim.get_learning_rate(state), 0.1, rtol=1e-6)
