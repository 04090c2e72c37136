"""check_gradients: correct functions pass, planted bugs (written with jax.custom_vjp) are
caught."""
import math
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.checks import report as report_lib
from research.checks.gradcheck import check_gradients

KEYS = jax.random.split(jax.random.PRNGKey(0), 8)
RNG = np.random.default_rng(0)   # numpy data: no device program compiled per shape


def _normal(*shape):
  return RNG.standard_normal(shape)


PARAMS = {"w1": 0.5 * _normal(6, 8), "b1": 0.1 * _normal(8), "w2": 0.5 * _normal(8, 3),
          "b2": 0.1 * _normal(3)}


def _mlp_params():
  return dict(PARAMS)


X = _normal(5, 6)
Y = np.array([0, 1, 2, 1, 0])


def _cross_entropy(logits, y):
  return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])


def tanh_mlp(params, x, y):
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  return _cross_entropy(h @ params["w2"] + params["b2"], y)


def relu_mlp(params, x, y):
  h = jax.nn.relu(x @ params["w1"] + params["b1"])
  return _cross_entropy(h @ params["w2"] + params["b2"], y)


# --- Correct functions. --------------------------------------------------------------------------


class TestCorrectFunctions(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_smooth_mlp_passes_at_1e7(self):
    report = check_gradients(self.variant(tanh_mlp), _mlp_params(), X, Y, full_leaf_size=100)
    assert report.ok, str(report)
    assert not report.has_kinks and report.num_kinks == 0
    for leaf in report.leaves:
      assert leaf.band == report_lib.GOOD
      assert leaf.max_rel_error <= 1e-7
      assert leaf.num_checked == math.prod(leaf.shape)   # full_leaf_size covers every leaf
    # The analytic values are jax.grad's (float64), gathered at the checked coordinates.
    grads = jax.grad(tanh_mlp)(_mlp_params(), X, Y)
    for leaf in report.leaves:
      chex.assert_trees_all_close(leaf.analytic, np.asarray(grads[leaf.path]).reshape(-1)[
          leaf.indices], rtol=1e-12)
      chex.assert_trees_all_close(leaf.numerical, leaf.analytic, rtol=1e-7)

  def test_relu_mlp_passes_and_reports_kink_crossings(self):
    # Every hidden unit's pre-activation on example 0 is +-1e-5: perturbations of 1e-3 cross.
    params = _mlp_params()
    params["b1"] = -(X[0] @ params["w1"]) + 1e-5 * np.where(np.arange(8) % 2, 1.0, -1.0)
    report = check_gradients(relu_mlp, params, X, Y, h=1e-3, full_leaf_size=100,
                             num_directions=0)
    assert report.has_kinks and report.num_kinks > 0
    assert report.ok, str(report)
    crossed = [(leaf, k) for leaf in report.leaves for k in np.flatnonzero(leaf.crossed_kink)]
    # Crossings have large errors (that is why they are set apart) and name the ReLU's max.
    assert max(leaf.rel_error[k] for leaf, k in crossed) > 1e-2
    assert all(any(site.startswith("max at") for site in leaf.crossed_sites[k])
               for leaf, k in crossed)
    assert "Kink crossings (these coordinates are not counted):" in str(report)

  def test_relu_coordinate_exactly_at_the_kink(self):
    w = jnp.array([1e-7, -2.0, 3.0])
    report = check_gradients(lambda p: jnp.sum(jax.nn.relu(p["w"]) ** 2 + jax.nn.relu(p["w"])),
                             {"w": w}, num_directions=0)
    leaf = report.leaves[0]
    np.testing.assert_array_equal(leaf.crossed_kink, [True, False, False])
    assert leaf.rel_error[0] > 0.1 and report.ok

  def test_hinge_loss_passes(self):
    x = _normal(6, 4)
    y = jnp.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])

    def svm(params, x, y):
      margins = y * (x @ params["w"] + params["b"])
      return jnp.mean(jnp.maximum(0.0, 1.0 - margins)) + 0.5 * jnp.sum(params["w"] ** 2)

    params = {"w": jnp.array([0.3, -0.2, 0.5, 0.1]), "b": jnp.array(0.05)}
    report = check_gradients(svm, params, x, y)
    assert report.ok and report.has_kinks, str(report)
    assert [leaf.path for leaf in report.leaves] == ["b", "w"]

  def test_jnp_where_and_maxout(self):
    def maxout(params, x):
      z = jnp.einsum("bi,ijk->bjk", x, params["w"])
      hidden = jnp.max(z, axis=-1)
      return jnp.sum(jnp.where(hidden > 0.2, hidden, 0.5 * hidden) ** 2)

    params = {"w": 0.5 * _normal(6, 4, 3)}
    report = check_gradients(maxout, params, X, coords_per_leaf=20)
    assert report.ok, str(report)
    primitives = {site.primitive for site in report.kink_sites}
    assert {"reduce_max", "gt", "select_n"} <= primitives

  def test_every_leaf_sampled_per_leaf(self):
    params = {"big": jnp.ones((300, 200)) * 0.01, "bias": jnp.ones((1,)), "mid": jnp.ones((7,))}
    report = check_gradients(lambda p: jnp.sum(jnp.tanh(p["big"])) + jnp.sum(p["bias"] ** 3)
                             + jnp.sum(jnp.sin(p["mid"])), params, coords_per_leaf=5,
                             num_directions=0)
    counts = {leaf.path: leaf.num_checked for leaf in report.leaves}
    assert counts == {"big": 5, "bias": 1, "mid": 5}
    assert report.ok

  def test_same_key_for_dropout(self):
    def dropout_mlp(params, x, y, key):
      h = jnp.tanh(x @ params["w1"] + params["b1"])
      keep = jax.random.bernoulli(key, 0.5, h.shape)
      h = jnp.where(keep, h / 0.5, 0.0)
      return _cross_entropy(h @ params["w2"] + params["b2"], y)

    report = check_gradients(dropout_mlp, _mlp_params(), X, Y, KEYS[7])
    assert report.ok, str(report)
    assert report.num_kinks == 0     # the mask does not depend on the parameters

  def test_num_examples_slices_the_batch_not_the_key(self):
    seen = []

    def loss(params, x, y, key):
      seen.append((x.shape, y.shape, key.shape))
      return tanh_mlp(params, x, y) + 0.0 * jax.random.normal(key)

    report = check_gradients(loss, _mlp_params(), X, Y, jax.random.PRNGKey(3), num_examples=2)
    assert set(seen) == {((2, 6), (2,), (2,))}
    np.testing.assert_allclose(report.loss_value, tanh_mlp(_mlp_params(), X[:2], Y[:2]),
                               rtol=1e-6)

  def test_h_sweep_and_slopes_of_the_two_formulas(self):
    params = {"w": jnp.array([0.3, -0.7, 1.1])}

    def smooth(p):
      return jnp.sum(jnp.sin(2.0 * p["w"]) + jnp.exp(p["w"]))

    hs = (1e-1, 1e-2, 1e-3)
    slopes = {}
    for formula in ("centered", "forward"):
      report = check_gradients(smooth, params, formula=formula, h_sweep=hs, num_directions=0)
      assert [row.h for row in report.sweep] == list(hs)
      errors = [row.median_rel_error for row in report.sweep]
      slopes[formula] = np.polyfit(np.log10(hs), np.log10(errors), 1)[0]
    assert slopes["centered"] == pytest.approx(2.0, abs=0.1)
    assert slopes["forward"] == pytest.approx(1.0, abs=0.1)
    full = check_gradients(smooth, params, h_sweep=True, num_directions=0)
    assert [row.h for row in full.sweep] == [10.0 ** -k for k in range(1, 13)]
    assert 1e-7 <= full.best_h <= 1e-3
    assert full.sweep[-1].max_rel_error > 1e-5   # h = 1e-12: roundoff dominates
    assert "best h:" in str(full)

  def test_perturbations_are_batched_and_compiled_once(self):
    traces = []

    def loss(params, x, y):
      traces.append(1)
      return tanh_mlp(params, x, y)

    check_gradients(loss, _mlp_params(), X, Y, coords_per_leaf=8, seed=1)
    first = len(traces)
    # Evaluations of 30 coordinates x 2 signs + directions: a handful of traces, not one each.
    assert first <= 8
    report = check_gradients(loss, _mlp_params(), X, Y, coords_per_leaf=8, seed=2)
    assert len(traces) == first     # warm: nothing re-traced (new coordinates are data)
    assert report.ok


# --- Planted bugs. -------------------------------------------------------------------------------


def _with_wrong_grad(fn, fix_grads):
  """``fn(params, *args)`` whose backward applies ``fix_grads(params_grads, params, args)``."""

  @jax.custom_vjp
  def wrapped(params, *args):
    return fn(params, *args)

  def fwd(params, *args):
    value, vjp = jax.vjp(fn, params, *args)
    return value, (vjp, params, args)

  def bwd(res, g):
    vjp, params, args = res
    grads = vjp(g)
    return (fix_grads(grads[0], params, args),) + tuple(grads[1:])

  wrapped.defvjp(fwd, bwd)
  return wrapped


class TestPlantedBugs(chex.TestCase):

  def test_bias_gradient_scaled_by_2(self):
    buggy = _with_wrong_grad(tanh_mlp, lambda g, p, a: {**g, "b2": 2.0 * g["b2"]})
    report = check_gradients(buggy, _mlp_params(), X, Y)
    assert not report.ok
    assert report.failed_leaves == ("b2",)
    leaf = {leaf.path: leaf for leaf in report.leaves}["b2"]
    assert leaf.band == report_lib.PROBABLY_WRONG
    np.testing.assert_allclose(leaf.rel_error[leaf.analytic != 0], 0.5, rtol=1e-6)
    assert "FAILED (b2" in str(report)

  def test_gradient_missing_its_1_over_n(self):
    buggy = _with_wrong_grad(tanh_mlp, lambda g, p, a: jax.tree.map(
        lambda x: x * a[0].shape[0], g))
    report = check_gradients(buggy, _mlp_params(), X, Y)
    assert set(report.failed_leaves) == {"b1", "b2", "w1", "w2"}
    assert all(not d.ok for d in report.directional)

  def test_single_wrong_entry_in_a_weight_gradient(self):
    buggy = _with_wrong_grad(tanh_mlp, lambda g, p, a: {
        **g, "w1": g["w1"].at[2, 5].add(1e-3)})
    report = check_gradients(buggy, _mlp_params(), X, Y, full_leaf_size=100)
    assert report.failed_leaves == ("w1",)
    leaf = report.leaves[[checked.path for checked in report.leaves].index("w1")]
    assert leaf.worst[0] == (2, 5)
    assert np.sum(leaf.rel_error > 1e-7) == 1

  def test_dropout_backward_with_a_different_mask(self):
    def dropout_loss(params, x, y, key):
      h = jnp.tanh(x @ params["w1"] + params["b1"])
      keep = jax.random.bernoulli(key, 0.5, h.shape)
      return _cross_entropy(jnp.where(keep, 2.0 * h, 0.0) @ params["w2"] + params["b2"], y)

    def other_mask(g, params, args):
      x, y, key = args
      return jax.grad(dropout_loss)(params, x, y, jax.random.fold_in(key, 1))

    buggy = _with_wrong_grad(dropout_loss, other_mask)
    assert check_gradients(dropout_loss, _mlp_params(), X, Y, KEYS[7]).ok
    report = check_gradients(buggy, _mlp_params(), X, Y, KEYS[7])
    assert {"w1", "b1"} <= set(report.failed_leaves)

  def test_data_bug_hidden_by_heavy_regularization(self):
    buggy = _with_wrong_grad(tanh_mlp, lambda g, p, a: {**g, "w2": 1.5 * g["w2"]})
    l2 = 1e8

    def regularization(params):
      return 0.5 * l2 * (jnp.sum(params["w1"] ** 2) + jnp.sum(params["w2"] ** 2))

    report = check_gradients(buggy, _mlp_params(), X, Y, regularization=regularization)
    # The total alone looks fine: the regularization's gradient swamps the bug ...
    assert report.failed_leaves == ()
    assert {leaf.path: leaf.band for leaf in report.leaves}["w2"] == report_lib.GOOD
    # ... the separate data check catches it, and the dominance is flagged.
    assert not report.ok
    assert report.parts["data"].failed_leaves == ("w2",)
    assert report.parts["regularization"].ok
    assert any("regularization gradient dominates" in w for w in report.warnings)
    assert "part 'data'" in str(report).splitlines()[-1]

  def test_svm_bug_visible_only_after_burn_in(self):
    x = _normal(8, 4)
    y = jnp.where(x[:, 0] + 0.5 * x[:, 1] > 0, 1.0, -1.0)

    def svm(params, x, y):
      return jnp.mean(jnp.maximum(0.0, 1.0 - y * (x @ params["w"] + params["b"])))

    def ignores_hinge(g, params, args):   # as if every margin were violated
      x, y = args
      return {"w": -jnp.mean(y[:, None] * x, axis=0), "b": -jnp.mean(y)}

    buggy = _with_wrong_grad(svm, ignores_hinge)
    tiny = {"w": jnp.full((4,), 1e-4), "b": jnp.array(0.0)}
    assert check_gradients(buggy, tiny, x, y).ok       # at tiny weights every margin < 1
    report = check_gradients(buggy, tiny, x, y, burn_in_steps=30,
                             optimizer=optax.sgd(0.5))
    assert report.burn_in.steps == 30
    assert report.burn_in.loss_after < report.burn_in.loss_before
    assert not report.ok and "w" in report.failed_leaves
    assert "burn-in: 30 steps" in str(report)


# --- Precision, range, errors. -------------------------------------------------------------------


def test_float32_flax_model_checks_cleanly_through_float64():
  import flax.linen as nn

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3)(jnp.tanh(nn.Dense(8)(x)))

  model = Net()
  x32 = X.astype(jnp.float32)
  params = model.init(KEYS[0], x32)["params"]
  assert jax.tree.leaves(params)[0].dtype == jnp.float32
  report = check_gradients(lambda p, x, y: _cross_entropy(model.apply({"params": p}, x), y),
                           params, x32, Y)
  assert report.ok, str(report)
  assert max(leaf.max_rel_error for leaf in report.leaves) <= 1e-7
  assert report.precision.startswith("float64 (cast from float32)")
  assert [leaf.path for leaf in report.leaves] == ["Dense_0/bias", "Dense_0/kernel",
                                                  "Dense_1/bias", "Dense_1/kernel"]


def test_works_with_x64_off_globally():
  code = textwrap.dedent("""
      import jax, jax.numpy as jnp
      assert not jax.config.jax_enable_x64
      from research.checks.gradcheck import check_gradients
      w = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32)
      report = check_gradients(lambda p: jnp.sum(jnp.tanh(p["w"]) ** 3), {"w": w}, num_directions=1)
      assert report.ok, str(report)
      assert report.leaves[0].max_rel_error <= 1e-7, report.leaves[0].max_rel_error
      assert "switched on for the check only" in report.precision, report.precision
      assert not jax.config.jax_enable_x64 and jnp.zeros(1).dtype == jnp.float32
      print("OK")
  """)
  env = {**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=os.path.dirname(os.path.dirname(__file__)), timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr[-2000:]


def test_tiny_gradient_warning_and_loss_scale():
  def tiny(params, x, y):
    return 1e-13 * tanh_mlp(params, x, y)

  report = check_gradients(tiny, _mlp_params(), X, Y)
  assert any("tiny gradients below 1e-10" in w for w in report.warnings)
  assert report.suggested_loss_scale is not None
  assert 1e13 <= report.suggested_loss_scale <= 1e15
  scaled = check_gradients(tiny, _mlp_params(), X, Y, loss_scale=report.suggested_loss_scale)
  assert scaled.suggested_loss_scale is None and scaled.ok
  assert "loss scaled by" in str(scaled)


def test_directional_check_alone():
  buggy = _with_wrong_grad(tanh_mlp, lambda g, p, a: jax.tree.map(lambda x: 1.05 * x, g))
  good = check_gradients(tanh_mlp, _mlp_params(), X, Y, coords_per_leaf=0, num_directions=3)
  assert good.ok and len(good.directional) == 3
  assert all(leaf.num_checked == 0 for leaf in good.leaves)
  for d in good.directional:
    np.testing.assert_allclose(d.numerical, d.analytic, rtol=1e-7)
  bad = check_gradients(buggy, _mlp_params(), X, Y, coords_per_leaf=0, num_directions=3)
  assert not bad.ok
  np.testing.assert_allclose([d.rel_error for d in bad.directional], 0.05 / 1.05, rtol=1e-5)


@pytest.mark.parametrize("call, error, match", [
    (lambda: check_gradients(lambda p: p["w"] * 2, {"w": jnp.ones(3)}), TypeError,
     r"must return a float scalar, got shape \(3,\)"),
    (lambda: check_gradients(lambda p: (jnp.sum(p["w"]), 1), {"w": jnp.ones(3)}), TypeError,
     "pass has_aux=True"),
    (lambda: check_gradients(lambda p: jnp.sum(p["w"]), {"w": jnp.ones(3, jnp.int32)}),
     TypeError, "params leaf 'w' has dtype int32"),
    (lambda: check_gradients(lambda p: jnp.sum(p), jnp.ones(3), step=1e-3), TypeError,
     r"unknown gradient-check option\(s\) \['step'\]; allowed: \['h', "),
    (lambda: check_gradients(lambda p: jnp.sum(p), jnp.ones(3), h=-1e-3), ValueError,
     "h must be a positive finite step, got -0.001"),
    (lambda: check_gradients(lambda p: jnp.sum(p), jnp.ones(3), formula="backward"), ValueError,
     r"formula must be one of \('centered', 'forward'\), got 'backward'"),
    (lambda: check_gradients(lambda p: jnp.sum(p), jnp.ones(3), coords_per_leaf=-1),
     ValueError, "coords_per_leaf must be an integer >= 0, got -1"),
])
def test_bad_input_errors(call, error, match):
  with pytest.raises(error, match=match):
    call()


def test_has_aux_and_report_text():
  def with_aux(params, x, y):
    return tanh_mlp(params, x, y), {"unused": 1.0}

  report = check_gradients(with_aux, _mlp_params(), X, Y, has_aux=True, name="mlp")
  text = str(report)
  assert report.ok
  assert text.splitlines()[0].startswith("Gradient check [mlp]: centered differences, h=1e-05")
  for column in ("leaf", "checked", "kinks", "max rel err", "median", "worst index", "analytic",
                 "numerical", "verdict"):
    assert column in text.splitlines()[4]
  assert text.splitlines()[-1] == "RESULT [mlp]: OK"


def test_smooth_regularization_is_graded_as_smooth_apart_from_a_relu_data_part():
  """An L2 term has no kinks of its own: its part is held to the 1e-7 bar even though the data
  part (a ReLU net) has kinks, so a 1e-5 relative error in its gradient fails."""
  l2 = 1e-2

  def regularization(params):
    return 0.5 * l2 * (jnp.sum(params["w1"] ** 2) + jnp.sum(params["w2"] ** 2))

  @jax.custom_vjp
  def slightly_wrong(params):
    return regularization(params)

  def forward(params):
    return regularization(params), params

  def backward(params, g):
    grads = jax.grad(regularization)(params)
    return ({**grads, "w1": grads["w1"] * (1 + 1e-5)},)   # off by 1e-5, relative

  slightly_wrong.defvjp(forward, backward)
  good = check_gradients(relu_mlp, _mlp_params(), X, Y, regularization=regularization)
  assert good.parts["data"].has_kinks and not good.parts["regularization"].has_kinks
  assert good.ok and good.parts["regularization"].ok
  bad = check_gradients(relu_mlp, _mlp_params(), X, Y, regularization=slightly_wrong)
  assert not bad.parts["regularization"].has_kinks
  assert bad.parts["regularization"].failed_leaves == ("w1",)
  assert 3e-6 < {leaf.path: leaf.max_rel_error for leaf in bad.parts["regularization"].leaves
                 }["w1"] < 3e-5
  assert not bad.ok


def test_directional_check_within_roundoff_is_not_graded():
  """A large constant in the loss limits what (f(x+hu) - f(x-hu)) / 2h can resolve
  (~eps |f| / h = 2e-5 here, against a directional derivative ~1e-3): the direction is reported
  within roundoff instead of failing a correct gradient."""

  def loss(params):
    return 1e6 + 0.5 * jnp.sum(params["x"] ** 2)

  params = {"x": 1e-3 * _normal(50)}
  report = check_gradients(loss, params, h=1e-5, num_directions=2)
  assert report.ok
  for d in report.directional:
    assert d.rel_error > 1e-7 and d.within_roundoff and d.ok and d.band != report_lib.GOOD
  assert "(within roundoff: not graded)" in str(report)
