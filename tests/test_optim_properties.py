"""Properties of the update rules: jit/no-jit agreement (chex.variants), dtype and structure
preservation, hypothesis properties, the elongated bowl, weight decay == L2 in the loss,
populations under vmap, no recompilation, and every construction error."""
import re

import chex
import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim

RULES = {
    "sgd": lambda: optim.sgd(0.1),
    "momentum": lambda: optim.momentum(0.1, mu=0.9),
    "nesterov": lambda: optim.nesterov(0.1, mu=0.9),
    "nesterov_lookahead": lambda: optim.nesterov_lookahead(0.1, mu=0.9),
    "adagrad": lambda: optim.adagrad(0.1),
    "rmsprop": lambda: optim.rmsprop(0.01),
    "adam": lambda: optim.adam(0.01),
    "adam_uncorrected": lambda: optim.adam(0.01, bias_correction=False),
    "weight_decay": lambda: optax.chain(optim.add_weight_decay(0.1), optim.sgd(0.1)),
}

#: The first update from zero state with gradient g, written out (lr 0.1 / 0.01 as in RULES).
FIRST_STEP = {
    "sgd": lambda g, x: -0.1 * g,
    "momentum": lambda g, x: -0.1 * g,
    "nesterov": lambda g, x: -(1 + 0.9) * 0.1 * g,
    "nesterov_lookahead": lambda g, x: -0.1 * g,
    "adagrad": lambda g, x: -0.1 * g / (np.abs(g) + 1e-8),
    "rmsprop": lambda g, x: -0.01 * g / (np.sqrt(0.01) * np.abs(g) + 1e-8),
    "adam": lambda g, x: -0.01 * g / (np.abs(g) + 1e-8),
    "adam_uncorrected": lambda g, x: -0.01 * 0.1 * g / (np.sqrt(0.001) * np.abs(g) + 1e-8),
    "weight_decay": lambda g, x: -0.1 * (g + 0.1 * x * (np.ndim(x) >= 2)),
}


def _tree(dtype=jnp.float32, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  return {
      "dense": {"kernel": jax.random.normal(keys[0], (4, 3), dtype),
                "bias": jax.random.normal(keys[1], (3,), dtype)},
      "layers": [jax.random.normal(keys[2], (2, 2, 3), dtype),
                 (jax.random.normal(keys[3], (), dtype),)],
  }


class RuleVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_first_step_matches_formula(self):
    params = _tree(jnp.float64)
    grads = _tree(jnp.float64, seed=1)
    for name, make in RULES.items():
      tx = make()
      update = self.variant(tx.update)
      deltas, _ = update(grads, tx.init(params), params)
      expected = jax.tree.map(
          lambda g, x, first_step=FIRST_STEP[name]: first_step(np.asarray(g), np.asarray(x)),
          grads, params)
      chex.assert_trees_all_close(deltas, expected, rtol=1e-10, atol=1e-12)

  @chex.variants(with_jit=True, without_jit=True)
  def test_ten_steps_agree_with_and_without_jit(self):
    """Both variants must reach the same parameters as an independent float64 jitted run."""
    for name, make in RULES.items():
      tx = make()
      update = self.variant(tx.update)
      reference_update = jax.jit(tx.update)
      params = reference = _tree(jnp.float64)
      state = reference_state = tx.init(params)
      for _ in range(10):
        grads = jax.tree.map(lambda x: 0.5 * x + 0.1, optim.gradient_point(params, state))
        deltas, state = update(grads, state, params)
        params = optax.apply_updates(params, deltas)
        grads = jax.tree.map(lambda x: 0.5 * x + 0.1,
                             optim.gradient_point(reference, reference_state))
        deltas, reference_state = reference_update(grads, reference_state, reference)
        reference = optax.apply_updates(reference, deltas)
      chex.assert_trees_all_close(params, reference, rtol=1e-12, atol=1e-12,
                                  custom_message=name)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float64], ids=str)
@pytest.mark.parametrize("name", list(RULES))
def test_dtype_and_structure_preserved(name, dtype):
  tx = RULES[name]()
  params = _tree(dtype)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for _ in range(3):
    grads = jax.tree.map(lambda x: x * 0.5 + 0.25, params)
    deltas, state = update(grads, state, params)
    params = optax.apply_updates(params, deltas)
  chex.assert_trees_all_equal_structs(params, _tree(dtype))
  chex.assert_trees_all_equal_dtypes(deltas, _tree(dtype))
  chex.assert_trees_all_equal_dtypes(params, _tree(dtype))
  chex.assert_tree_all_finite(params)
  # Rule state buffers (velocity, caches, moments) keep the parameters' dtype.
  for leaf in jax.tree.leaves(state):
    if jnp.ndim(leaf) >= 1 and jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == dtype, (name, leaf.dtype)
  # Hyperparameters are at least float32: bfloat16 would round beta2 = 0.999 to 1.0.
  for value in optim.get_hyperparams(state).values():
    assert value.dtype == jnp.promote_types(dtype, jnp.float32)


def test_bfloat16_adam_still_adapts():
  """With beta2 stored in bfloat16 (== 1.0) Adam's second moment would stay 0 and the step blow
  up to lr * g / eps; with float32 hyperparameters the first step is ~lr."""
  params = {"w": jnp.full((8,), 1.0, jnp.bfloat16)}
  tx = optim.adam(1e-3)
  deltas, _ = tx.update({"w": jnp.full((8,), 0.3, jnp.bfloat16)}, tx.init(params), params)
  np.testing.assert_allclose(np.asarray(deltas["w"], np.float32), -1e-3, rtol=1e-2)


# ------------------------------------------------------------------------------------- hypothesis

# XLA on CPU flushes subnormals to zero, so x + 0 != x for them: not a property of the rule.
_finite = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False, width=64)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(params=hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=4),
                                    elements=_finite),
                  learning_rate=st.floats(0.0, 10.0))
def test_zero_gradient_leaves_sgd_params_unchanged(params, learning_rate):
  tx = optim.sgd(learning_rate)
  tree = {"w": jnp.asarray(params)}
  deltas, _ = tx.update(jax.tree.map(jnp.zeros_like, tree), tx.init(tree), tree)
  new = optax.apply_updates(tree, deltas)
  np.testing.assert_array_equal(new["w"], params)


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(
    grads=hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=5),
                     elements=st.floats(1e-3, 1e3).flatmap(lambda x: st.sampled_from([x, -x]))),
    learning_rate=st.floats(1e-5, 1.0),
    beta1=st.floats(0.0, 0.99), beta2=st.floats(0.0, 0.9999))
def test_first_bias_corrected_adam_step_moves_every_coordinate_by_lr(grads, learning_rate,
                                                                     beta1, beta2):
  """m_hat = g and v_hat = g**2 after one step, so |dx| = lr * |g| / (|g| + eps) ~= lr."""
  tx = optim.adam(learning_rate, beta1=beta1, beta2=beta2)
  tree = {"w": jnp.zeros_like(jnp.asarray(grads))}
  deltas, _ = tx.update({"w": jnp.asarray(grads)}, tx.init(tree), tree)
  np.testing.assert_allclose(np.abs(deltas["w"]), learning_rate, rtol=1e-5)
  np.testing.assert_array_equal(np.sign(deltas["w"]), -np.sign(grads))


# ---------------------------------------------------------------------------- the elongated bowl


def _bowl(params):
  x, y = params["xy"][0], params["xy"][1]
  return x**2 / 20 + y**2


BOWL_RULES = {
    "sgd": optim.sgd(0.5),
    "momentum": optim.momentum(0.05, mu=0.9),
    "nesterov": optim.nesterov(0.05, mu=0.9),
    "nesterov_lookahead": optim.nesterov_lookahead(0.05, mu=0.9),
    "adagrad": optim.adagrad(0.5),
    "rmsprop": optim.rmsprop(0.05),
    "adam": optim.adam(0.1),
    "adam_uncorrected": optim.adam(0.1, bias_correction=False),
}


@pytest.mark.parametrize("name", list(BOWL_RULES))
def test_every_rule_decreases_the_elongated_bowl(name):
  tx = BOWL_RULES[name]
  params = {"xy": jnp.array([-7.0, 2.0])}
  start = float(_bowl(params))

  def step(carry, _):
    params, state = carry
    grads = jax.grad(_bowl)(optim.gradient_point(params, state))
    deltas, state = tx.update(grads, state, params)
    return (optax.apply_updates(params, deltas), state), _bowl(params)

  (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), length=100)
  final = float(_bowl(params))
  assert final < 0.2 * start, (name, start, final)
  assert np.all(np.isfinite(losses))


# -------------------------------------------------------------- weight decay, masks, populations


def test_weights_only_mask_selects_kernels():
  params = {"Dense_0": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
            "Conv_0": {"kernel": jnp.ones((3, 3, 1, 8))},
            "BatchNorm_0": {"scale": jnp.ones(8), "bias": jnp.zeros(8)}}
  assert optim.weights_only_mask(params) == {
      "Dense_0": {"kernel": True, "bias": False}, "Conv_0": {"kernel": True},
      "BatchNorm_0": {"scale": False, "bias": False}}


@pytest.mark.parametrize("rule", ["sgd", "adam"])
def test_weight_decay_equals_l2_term_in_the_loss(rule):
  """chain(add_weight_decay(wd), rule) == rule on loss + 0.5 * wd * sum(kernel**2)."""
  wd = 0.3
  make = {"sgd": lambda: optim.sgd(0.05), "adam": lambda: optim.adam(0.01)}[rule]
  params = {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([1.0, -1.0])}

  def data_loss(p):
    return jnp.sum((p["kernel"] @ jnp.array([1.0, 2.0]) + p["bias"]) ** 2)

  def l2_loss(p):
    return data_loss(p) + 0.5 * wd * jnp.sum(p["kernel"] ** 2)

  def run(tx, loss):
    p, s = params, tx.init(params)
    for _ in range(20):
      deltas, s = tx.update(jax.grad(loss)(p), s, p)
      p = optax.apply_updates(p, deltas)
    return p

  with_decay = run(optax.chain(optim.add_weight_decay(wd), make()), data_loss)
  with_l2 = run(make(), l2_loss)
  chex.assert_trees_all_close(with_decay, with_l2, rtol=1e-12, atol=1e-12)
  without = run(make(), data_loss)
  assert not np.allclose(with_decay["kernel"], without["kernel"])
  # The default mask leaves the bias alone: mask=None decays it too (and changes it).
  everything = run(optax.chain(optim.add_weight_decay(wd, mask=None), make()), data_loss)
  assert not np.allclose(everything["bias"], with_decay["bias"])


def test_population_under_vmap_matches_individual_runs():
  """init_population + jax.vmap(tx.update): each member follows its own hyperparameters."""
  learning_rates = jnp.array([0.01, 0.05, 0.1])
  mus = jnp.array([0.0, 0.5, 0.9])
  tx = optim.momentum(0.1, mu=0.9)  # placeholders, overwritten per member
  single = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
  population = jax.tree.map(lambda x: jnp.stack([x] * 3), single)
  states = optim.init_population(tx, population, {"learning_rate": learning_rates, "mu": mus})
  update = jax.jit(jax.vmap(tx.update))
  params = population
  for _ in range(5):
    deltas, states = update(jax.tree.map(lambda x: 2 * x, params), states, params)
    params = optax.apply_updates(params, deltas)
  np.testing.assert_allclose(optim.get_learning_rate(states), learning_rates)
  for member in range(3):
    solo = optim.momentum(float(learning_rates[member]), mu=float(mus[member]))
    p, s = single, solo.init(single)
    for _ in range(5):
      deltas, s = solo.update(jax.tree.map(lambda x: 2 * x, p), s, p)
      p = optax.apply_updates(p, deltas)
    chex.assert_trees_all_close(jax.tree.map(lambda x, member=member: x[member], params), p,
                                rtol=1e-12)


def test_set_hyperparams_errors():
  tx = optim.momentum(0.1, mu=optim.schedules.momentum_warmup(steps=5))
  state = tx.init({"w": jnp.ones(2)})
  with pytest.raises(ValueError,
                     match=r"'mu' follows a schedule.*settable: learning_rate, lr_scale"):
    optim.set_hyperparams(state, mu=0.5)
  with pytest.raises(ValueError, match=r"unknown hyperparameter 'beta1'"):
    optim.set_hyperparams(state, beta1=0.5)
  with pytest.raises(ValueError, match="holds no hyperparameters"):
    optim.get_learning_rate(optax.sgd(0.1).init({"w": jnp.ones(2)}))


# ------------------------------------------------------------------------------ no recompilation


def test_no_recompilation_across_steps_schedules_and_scaling():
  traces = []
  tx = optim.momentum(optim.schedules.exponential_decay(0.1, 0.01),
                      mu=optim.schedules.momentum_warmup(steps=3))
  params = _tree()

  @jax.jit
  def step(params, state):
    traces.append(1)  # runs only while tracing
    grads = jax.tree.map(jnp.ones_like, params)
    deltas, state = tx.update(grads, state, params)
    return optax.apply_updates(params, deltas), state

  state = tx.init(params)
  rates = []
  for i in range(8):
    params, state = step(params, state)
    rates.append(float(optim.get_learning_rate(state)))
    if i == 4:
      state = optim.scale_learning_rate(state, 0.5)
  assert len(traces) == 1 and step._cache_size() == 1
  np.testing.assert_allclose(rates[:5], 0.1 * np.exp(-0.01 * np.arange(5)), rtol=1e-6)
  np.testing.assert_allclose(rates[5:], 0.05 * np.exp(-0.01 * np.arange(5, 8)), rtol=1e-6)


# ----------------------------------------------------------------------------------------- errors

ERROR_CASES = [
    (lambda: optim.sgd(-0.1), "learning_rate", "-0.1", "[0, inf)"),
    (lambda: optim.momentum(0.1, mu=1.0), "mu", "1.0", "[0, 1)"),
    (lambda: optim.momentum(0.1, mu=-0.1), "mu", "-0.1", "[0, 1)"),
    (lambda: optim.nesterov(0.1, mu=1.5), "mu", "1.5", "[0, 1)"),
    (lambda: optim.nesterov_lookahead(-1.0), "learning_rate", "-1.0", "[0, inf)"),
    (lambda: optim.adagrad(0.1, eps=0.0), "eps", "0.0", "(0, inf)"),
    (lambda: optim.rmsprop(0.1, decay_rate=1.0), "decay_rate", "1.0", "[0, 1)"),
    (lambda: optim.rmsprop(0.1, eps=-1e-8), "eps", "-1e-08", "(0, inf)"),
    (lambda: optim.adam(0.1, beta1=1.0), "beta1", "1.0", "[0, 1)"),
    (lambda: optim.adam(0.1, beta2=-0.5), "beta2", "-0.5", "[0, 1)"),
    (lambda: optim.adam(0.1, eps=0.0), "eps", "0.0", "(0, inf)"),
    (lambda: optim.adam(float("nan")), "learning_rate", "nan", "[0, inf)"),
    (lambda: optim.add_weight_decay(-1e-4), "weight_decay", "-0.0001", "[0, inf)"),
    (lambda: optim.momentum(jnp.array([0.1, -0.1])), "learning_rate", "-0.1", "[0, inf)"),
]


@pytest.mark.parametrize("make,parameter,value,allowed", ERROR_CASES)
def test_bad_hyperparameter_names_parameter_value_and_range(make, parameter, value, allowed):
  with pytest.raises(ValueError) as error:
    make()
  message = str(error.value)
  assert message.startswith(f"{parameter} must be in "), message
  assert message.endswith(f"{allowed}, got {value}") or f"{allowed}, got" in message, message
  assert value in message, message


def test_error_message_is_exact():
  with pytest.raises(ValueError, match=re.escape("mu must be in [0, 1), got 1.2")):
    optim.momentum(0.1, mu=1.2)
  with pytest.raises(ValueError, match=re.escape("learning_rate must be in [0, inf), got -0.001")):
    optim.adam(-1e-3)
  with pytest.raises(ValueError, match=re.escape("bias_correction must be True or False, got 1")):
    optim.adam(1e-3, bias_correction=1)
