"""research.averaging: EMA (bias-corrected) and Polyak averages, batch-norm recomputation."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from research import averaging


def _iterates(num, seed=0, dtype=jnp.float64):
  """A list of ``num`` parameter pytrees (two leaves of different shapes)."""
  rng = np.random.default_rng(seed)
  return [{"dense": {"kernel": jnp.asarray(rng.normal(size=(3, 2)), dtype),
                     "bias": jnp.asarray(rng.normal(size=(2,)), dtype)}}
          for _ in range(num)]


def _run(state, iterates, update):
  for step, params in enumerate(iterates, start=1):
    state = update(state, params, jnp.asarray(step))
  return state


class EmaTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_decay_zero_equals_raw_parameters(self):
    its = _iterates(5)
    state = averaging.init_averages(its[0], ema_decay=0.0, polyak_start_step=None)
    update = self.variant(averaging.update_averages)
    for step, params in enumerate(its[1:], start=1):
      state = update(state, params, jnp.asarray(step))
      chex.assert_trees_all_equal(averaging.averaged_params(state)["ema"], params)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bias_corrected_weighted_mean_float64(self):
    decay, its = 0.9, _iterates(7, seed=1)
    state = averaging.init_averages(its[0], ema_decay=decay, polyak_start_step=None)
    state = _run(state, its, self.variant(averaging.update_averages))
    t = len(its)
    weights = [(1 - decay) * decay ** (t - s) for s in range(1, t + 1)]
    norm = 1 - decay ** t
    expected = jax.tree.map(lambda *xs: sum(w * x for w, x in zip(weights, xs)) / norm, *its)
    ema = averaging.averaged_params(state)["ema"]
    chex.assert_trees_all_close(ema, expected, rtol=1e-13, atol=1e-13)
    assert jax.tree.leaves(ema)[0].dtype == jnp.float64
    assert int(state.ema_count) == t

  def test_first_average_is_first_iterate_not_pulled_to_init(self):
    init = jax.tree.map(lambda x: x * 0 + 100.0, _iterates(1)[0])
    first = _iterates(1, seed=3)[0]
    state = averaging.init_averages(init, ema_decay=0.999, polyak_start_step=0)
    # Before any update the averages are the initial parameters...
    chex.assert_trees_all_equal(averaging.averaged_params(state)["ema"], init)
    state = averaging.update_averages(state, first, jnp.asarray(1))
    # ... and the first update replaces them entirely (an uncorrected EMA would give ~100).
    chex.assert_trees_all_close(averaging.averaged_params(state)["ema"], first, rtol=1e-12)
    chex.assert_trees_all_close(averaging.averaged_params(state)["polyak"], first, rtol=1e-12)

  @settings(max_examples=15, deadline=None)
  @given(decay=st.floats(0.0, 0.999), t=st.integers(1, 5000))
  def test_rate_formula(self, decay, t):
    expected = (1 - decay) / (1 - decay ** t) if decay > 0 else 1.0
    np.testing.assert_allclose(float(averaging.ema_rate(decay, t, jnp.float64)), expected,
                               rtol=1e-9)

  def test_float32_parameters_stay_float32(self):
    its = _iterates(3, dtype=jnp.float32)
    state = averaging.init_averages(its[0], ema_decay=0.99, polyak_start_step=0)
    state = jax.jit(averaging.update_averages)(state, its[1], jnp.asarray(1))
    for avg in averaging.averaged_params(state).values():
      assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(avg))

  def test_invalid_decay_names_value_and_range(self):
    with pytest.raises(ValueError, match=r"ema_decay=1\.0.*\[0, 1\)"):
      averaging.init_averages(_iterates(1)[0], ema_decay=1.0, polyak_start_step=None)

  def test_vmap_over_decays(self):
    its = _iterates(4)
    decays = jnp.asarray([0.0, 0.5, 0.9])
    state = jax.vmap(lambda d: averaging.init_averages(its[0], 0.5, None)._replace(ema_decay=d))(
        decays)
    for step, params in enumerate(its[1:], start=1):
      state = jax.vmap(averaging.update_averages, in_axes=(0, None, None))(
          state, params, jnp.asarray(step))
    # Decay 0 member is the last iterate.
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[0], state.ema), its[-1])


class PolyakTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_equals_mean_of_recorded_iterates_from_start(self):
    its, start = _iterates(9, seed=2), 4
    state = averaging.init_averages(its[0], ema_decay=None, polyak_start_step=start)
    update = self.variant(averaging.update_averages)
    for step, params in enumerate(its, start=1):
      state = update(state, params, jnp.asarray(step))
      polyak = averaging.averaged_params(state)["polyak"]
      if step < start:  # before the window: follows the iterate
        chex.assert_trees_all_equal(polyak, params)
    recorded = its[start - 1:]  # steps start..9
    expected = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *recorded)
    chex.assert_trees_all_close(averaging.averaged_params(state)["polyak"], expected,
                                rtol=1e-13, atol=1e-13)
    assert int(state.polyak_count) == len(recorded)
    assert set(averaging.averaged_params(state)) == {"polyak"}

  def test_off_everything(self):
    state = averaging.init_averages(_iterates(1)[0], ema_decay=None, polyak_start_step=-1)
    assert state.ema is None and state.polyak is None
    assert averaging.averaged_params(state) == {}
    assert averaging.averaged_params(None) == {}
    state = averaging.update_averages(state, _iterates(1)[0], jnp.asarray(1))
    assert averaging.averaged_params(state) == {}


class ConfigTest(chex.TestCase):

  def _cfg(self, **kw):
    cfg = ml_collections.ConfigDict(dict(ema_decay=0.0, polyak_start_epoch=-1, export="raw"))
    cfg.update(kw)
    return cfg

  def test_config_mapping(self):
    params = _iterates(1)[0]
    assert averaging.init_averages_from_config(params, self._cfg(), 10) is None
    state = averaging.init_averages_from_config(
        params, self._cfg(ema_decay=0.99, polyak_start_epoch=3, export="polyak"), 10)
    assert int(state.polyak_start_step) == 30
    np.testing.assert_allclose(float(state.ema_decay), 0.99)

  def test_config_errors(self):
    params = _iterates(1)[0]
    with pytest.raises(ValueError, match="export='ema' but that average is off"):
      averaging.init_averages_from_config(params, self._cfg(export="ema"), 10)
    with pytest.raises(ValueError, match="export='swa' is unknown; known: raw, ema, polyak"):
      averaging.init_averages_from_config(params, self._cfg(export="swa"), 10)

  def test_select_params(self):
    params = _iterates(2)
    state = averaging.init_averages(params[0], ema_decay=0.5, polyak_start_step=None)
    assert averaging.select_params(params[1], state, "raw") is params[1]
    chex.assert_trees_all_equal(averaging.select_params(params[1], state, "ema"), params[0])
    with pytest.raises(ValueError,
                       match=r"'polyak' are not available; available: \['raw', 'ema'\]"):
      averaging.select_params(params[1], state, "polyak")


class _BnNet(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.Dense(4)(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
    return nn.Dense(2)(nn.relu(h))


def test_recompute_batch_stats_equals_mean_of_per_batch_statistics():
  model = _BnNet()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(40, 3)))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  params = variables["params"]
  stats = averaging.recompute_batch_stats(model, params, variables["batch_stats"], x,
                                          batch_size=20)
  pre = [x[:20] @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"],
         x[20:] @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]]
  expected_mean = np.mean([h.mean(0) for h in pre], axis=0)
  expected_var = np.mean([h.var(0) for h in pre], axis=0)
  # rtol 2e-6: the stats are float32.
  np.testing.assert_allclose(stats["BatchNorm_0"]["mean"], expected_mean, rtol=2e-6)
  np.testing.assert_allclose(stats["BatchNorm_0"]["var"], expected_var, rtol=2e-6)
  # No batch norm: returned unchanged.
  assert averaging.recompute_batch_stats(model, params, {}, x) == {}
