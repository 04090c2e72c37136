"""Kink detection through nested computations (issue item 5).

Every test checks the same small layer ``z = x @ w + b`` (one example, three units) followed by a
non-differentiable function placed inside a nested construct: ``jax.jit``, ``jax.custom_jvp``,
``jax.custom_vjp``, ``jax.checkpoint``, ``lax.scan``/``fori_loop``, ``lax.cond`` and
``lax.while_loop``. Unit 0's pre-activation sits either at ``0.3 h`` (a ``+-h`` step of a
coordinate that moves it by more than ``0.3 h`` crosses the kink at 0) or at 0.8 (nothing
crosses). With ``x = (1, 0.1)`` the coordinates that move unit 0 by ``+-h`` are ``b[0]`` and
``w[0, 0]``; ``w[1, 0]`` moves it by only ``+-0.1 h`` and stays on its side.
"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized
from jax import lax

from research.checks import report as report_lib
from research.checks.gradcheck import GradCheckOptions, check_gradients

H = GradCheckOptions().h          # the default step: what check_gradients perturbs by
X = np.array([1.0, 0.1])
W = np.array([[0.4, -0.3, 0.2], [0.7, 0.5, -0.6]])
C = np.array([1.0, 2.0, -1.5])    # output weights: each unit's gradient differs
AT_KINK = 0.3 * H                 # +h -> 1.3 h, -h -> -0.7 h: across 0
CLEAR = 0.8                       # +-h stays far from 0

# Which checked coordinates (full_leaf_size covers all) cross unit 0's kink.
CROSSED = {"b": np.array([True, False, False]),
           "w": np.array([True, False, False, False, False, False])}
NONE_CROSSED = {"b": np.zeros(3, bool), "w": np.zeros(6, bool)}


def _params(unit0: float, others=(0.5, -0.5)) -> dict:
  """Params whose pre-activations on X are exactly ``(unit0, *others)`` (up to roundoff)."""
  pre = np.array([unit0, *others])
  return {"b": pre - X @ W, "w": W.copy()}


def _layer_loss(nonlinearity):
  """``sum(C * nonlinearity(x @ w + b)) + 0.1 |z|^2``: the smooth term keeps every gradient
  nonzero, so the smooth coordinates are graded at the 1e-7 bar."""

  def loss(params, x):
    z = x @ params["w"] + params["b"]
    return jnp.sum(C * nonlinearity(z)) + 0.1 * jnp.sum(z ** 2)

  return loss


def _check(loss, params, *args, **options):
  return check_gradients(loss, params, X, *args, full_leaf_size=100, **options)


def _crossed(report) -> dict:
  return {leaf.path: leaf.crossed_kink for leaf in report.leaves}


def _leaf(report, path):
  return {leaf.path: leaf for leaf in report.leaves}[path]


# --- The non-differentiable functions, each inside one construct. -------------------------------


def _relu(z):
  return lax.max(z, 0.0)      # the primitive itself: no library wrapper adds its own nesting


@jax.custom_jvp
def _relu_custom_jvp(z):
  return lax.max(z, 0.0)


@_relu_custom_jvp.defjvp
def _relu_custom_jvp_rule(primals, tangents):
  (z,), (t,) = primals, tangents
  return _relu_custom_jvp(z), jnp.where(z > 0, t, 0.0)


@jax.custom_vjp
def _abs_custom_vjp(z):
  return lax.abs(z)


_abs_custom_vjp.defvjp(lambda z: (lax.abs(z), z), lambda z, g: (jnp.sign(z) * g,))


def _relu_in_scan(z):
  """Sum of relu(z + s) over s = 2, 0, 2: unit 0's kink is met in the middle iteration only."""

  def step(total, shift):
    return total + lax.max(z + shift, 0.0), None

  return lax.scan(step, jnp.zeros_like(z), jnp.array([2.0, 0.0, 2.0]))[0]


def _relu_in_fori_loop(z):
  """fori_loop with static bounds (jax lowers it to a scan): relu(z - (i - 1)^2), i = 0, 1, 2."""
  return lax.fori_loop(0, 3, lambda i, total: total + lax.max(z - (i - 1.0) ** 2, 0.0),
                       jnp.zeros_like(z))


def _leaky_by_cond(z):
  """2 z or z / 2 depending on the sign of unit 0: a cond whose branch index is a decision."""
  return lax.cond(z[0] > 0, lambda z: 2.0 * z, lambda z: 0.5 * z, z)


# name, function, (primitive, scope fragment) that must name the crossed decision.
NESTED = [
    ("jit", jax.jit(_relu), "max", "jit(_relu)"),
    ("custom_jvp", _relu_custom_jvp, "max", "custom_jvp_call"),
    ("custom_vjp", _abs_custom_vjp, "abs", "custom_vjp_call"),
    ("checkpoint", jax.checkpoint(_relu), "max", "remat"),
    ("scan", _relu_in_scan, "max", "scan at"),
    ("fori_loop", _relu_in_fori_loop, "max", "scan at"),
    ("jax_nn_relu", jax.nn.relu, "max", "custom_jvp_call > jit(relu)"),
    ("cond_branch_index", _leaky_by_cond, "cond", ""),
]


class NestedKinksTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(name, fn, primitive, scope)
                                    for name, fn, primitive, scope in NESTED])
  def test_crossing_reported_inside(self, nonlinearity, primitive, scope):
    loss = self.variant(_layer_loss(nonlinearity))
    report = _check(loss, _params(AT_KINK))
    assert report.ok, str(report)
    chex.assert_trees_all_equal(_crossed(report), CROSSED)
    assert report.num_kinks == 2
    grads = jax.grad(loss)(_params(AT_KINK), X)
    for leaf in report.leaves:
      for k in np.flatnonzero(leaf.crossed_kink):
        # The crossed decision is named with its nesting ...
        assert any(site.startswith(f"{primitive} at ") and scope in site
                   for site in leaf.crossed_sites[k]), leaf.crossed_sites[k]
        # ... and the coordinate would have failed had it been graded.
        assert leaf.rel_error[k] > report_lib.WRONG_ABOVE
      clean = ~leaf.crossed_kink
      assert np.all(leaf.rel_error[clean] <= report_lib.GOOD_AT_MOST), (leaf.path, leaf.rel_error)
      chex.assert_trees_all_close(leaf.analytic,
                                  np.asarray(grads[leaf.path]).reshape(-1)[leaf.indices],
                                  rtol=1e-12)
    text = str(report)
    assert "Kink crossings (these coordinates are not counted):" in text
    assert any(line.strip().startswith("b[0]: analytic") for line in text.splitlines())
    assert text.splitlines()[-1] == "RESULT [loss]: OK"

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(name, fn, primitive, scope)
                                    for name, fn, primitive, scope in NESTED])
  def test_nothing_crossed_away_from_the_kink(self, nonlinearity, primitive, scope):
    report = _check(self.variant(_layer_loss(nonlinearity)), _params(CLEAR))
    assert report.ok, str(report)
    chex.assert_trees_all_equal(_crossed(report), NONE_CROSSED)
    assert report.num_kinks == 0
    assert not any(d.crossed_kink for d in report.directional)
    # The decision site is still found (it just did not flip), so the function has kinks.
    assert report.has_kinks
    assert any(site.primitive == primitive and scope in str(site) for site in report.kink_sites)
    assert all(leaf.band == report_lib.GOOD for leaf in report.leaves)
    assert report.not_inspected == ()


class NestingDepthTest(chex.TestCase):
  """jit > checkpoint > scan > custom_vjp: the decision is found at the bottom, and a wrong
  backward at the bottom is caught, not excused as a kink."""

  @staticmethod
  def _deep(abs_fn):
    def through_scan(z):
      def step(total, scale):
        return total + abs_fn(scale * z), None
      return lax.scan(step, jnp.zeros_like(z), jnp.array([1.0, 2.0]))[0]

    return jax.jit(jax.checkpoint(through_scan))

  def test_correct_function_passes_with_crossings_named_by_their_nesting(self):
    report = _check(_layer_loss(self._deep(_abs_custom_vjp)), _params(AT_KINK))
    assert report.ok, str(report)
    chex.assert_trees_all_equal(_crossed(report), CROSSED)
    sites = _leaf(report, "b").crossed_sites[0]
    assert len(sites) == 1
    assert sites[0].startswith("abs at ")
    scope = sites[0].split(" in ", 1)[1]
    assert scope.startswith("jit(through_scan) > remat")
    assert "> scan at " in scope and scope.endswith("> custom_vjp_call")

  def test_planted_bug_at_the_bottom_is_caught(self):
    @jax.custom_vjp
    def abs_forgets_sign(z):
      return lax.abs(z)

    abs_forgets_sign.defvjp(lambda z: (lax.abs(z), z), lambda z, g: (g,))   # bug: no sign(z)

    report = _check(_layer_loss(self._deep(abs_forgets_sign)), _params(AT_KINK))
    assert not report.ok
    assert report.failed_leaves == ("b", "w")
    # Unit 0 crossed its kink (set apart); unit 2 (pre-activation -0.5, where the sign matters)
    # is wrong and not excused: it is graded and fails.
    chex.assert_trees_all_equal(_crossed(report), CROSSED)
    b = _leaf(report, "b")
    assert b.worst[0] == (2,) and b.band == report_lib.PROBABLY_WRONG
    # d/db2 of -1.5 * (|z2| + |2 z2|) + 0.1 z2^2 at z2 = -0.5: 4.5 - 0.1; the bug gives -4.5 - 0.1.
    chex.assert_trees_all_close(b.worst[1:], (-4.6, 4.4), rtol=1e-8)
    w = _leaf(report, "w")
    failing = {np.unravel_index(int(i), w.shape) for i, e, c in
               zip(w.indices, w.rel_error, w.crossed_kink) if e > report_lib.WRONG_ABOVE and not c}
    assert failing == {(0, 2), (1, 2)}
    assert "FAILED (b, w" in str(report).splitlines()[-1]


class CondTest(chex.TestCase):

  @staticmethod
  def _loss(params, x, use_relu):
    """A cond whose index does not depend on the params: the taken branch's decisions count."""
    z = x @ params["w"] + params["b"]
    out = lax.cond(use_relu, _relu, lambda z: 0.5 * z, z)
    return jnp.sum(C * out) + 0.1 * jnp.sum(z ** 2)

  @chex.variants(with_jit=True, without_jit=True)
  def test_decisions_of_the_taken_branch(self):
    loss = self.variant(self._loss)
    relu_taken = _check(loss, _params(AT_KINK), np.array(True))
    assert relu_taken.ok, str(relu_taken)
    chex.assert_trees_all_equal(_crossed(relu_taken), CROSSED)
    sites = _leaf(relu_taken, "b").crossed_sites[0]
    assert sites and all(s.startswith("max at ") and "cond branch 1 at" in s for s in sites)
    # The branch index is no decision here (it is not a function of the params).
    assert not any(site.primitive == "cond" for site in relu_taken.kink_sites)
    linear_taken = _check(loss, _params(AT_KINK), np.array(False))
    assert linear_taken.ok and linear_taken.num_kinks == 0, str(linear_taken)
    assert all(leaf.band == report_lib.GOOD for leaf in linear_taken.leaves)

  def test_branch_flip_is_reported_with_the_comparison_that_chose_it(self):
    report = _check(_layer_loss(_leaky_by_cond), _params(AT_KINK))
    sites = _leaf(report, "b").crossed_sites[0]
    assert [site.split(" at ")[0] for site in sites] == ["gt", "cond"]
    assert "cond at" in str(report)


# --- while_loop: its trip count is a decision; decisions inside its body are not followed. ------
# A loss can only contain a while_loop where jax can differentiate it: inside a custom_vjp (an
# iterative solver with a hand-written backward), whose primal the numerical derivative sees.


@jax.custom_vjp
def _halve_until_unit(z):
  """z / 2^k, k the fewest halvings that bring max |z| to <= 1 (a while loop)."""
  return _halvings(z)[0]


def _halvings(z):
  return lax.while_loop(lambda s: jnp.max(jnp.abs(s[0])) > 1.0, lambda s: (s[0] / 2, s[1] + 1),
                        (z, 0))


def _halve_fwd(z):
  y, k = _halvings(z)
  return y, k


_halve_until_unit.defvjp(_halve_fwd, lambda k, g: (g / 2.0 ** k,))


@jax.custom_vjp
def _three_relus(z):
  """3 relu(z), accumulated by a while loop with a fixed trip count (decisions in its body)."""
  body = lambda s: (s[0] + 1, s[1] + lax.max(z, 0.0))
  return lax.while_loop(lambda s: s[0] < 3, body, (0, jnp.zeros_like(z)))[1]


_three_relus.defvjp(lambda z: (_three_relus(z), z),
                    lambda z, g: (3.0 * jnp.where(z > 0, g, 0.0),))


class WhileLoopTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_trip_count_change_is_a_crossing(self):
    loss = self.variant(_layer_loss(_halve_until_unit))
    # Unit 0 at 1 + 0.3h: one halving at x and x + h, none at x - h.
    report = _check(loss, _params(1.0 + AT_KINK))
    assert report.ok, str(report)
    chex.assert_trees_all_equal(_crossed(report), CROSSED)
    assert _leaf(report, "b").crossed_sites[0][0].startswith("while at ")
    # The loop's condition holds decisions (abs, max, gt): said to be not followed.
    assert len(report.not_inspected) == 1
    assert report.not_inspected[0].startswith("while at ")
    assert "decisions inside the loop body are not followed (its trip count is)" in (
        report.not_inspected[0])
    assert f"not inspected: {report.not_inspected[0]}" in str(report)
    clear = _check(loss, _params(CLEAR))
    assert clear.ok and clear.num_kinks == 0, str(clear)

  def test_body_decisions_are_not_followed_and_the_report_says_so(self):
    # Unit 0 crosses relu's kink inside the loop body; the trip count (3) does not change, so
    # the crossing goes unseen: b[0] and w[0, 0] are graded, fail, and the report says why.
    report = _check(_layer_loss(_three_relus), _params(AT_KINK))
    assert report.num_kinks == 0
    assert not report.ok and report.failed_leaves == ("b", "w")
    b = _leaf(report, "b")
    assert b.worst[0] == (0,)
    # 3 relu at 0.3h: analytic 3 (+ 0.2 z), numerical 3 * 1.3h / 2h = 1.95 (+ 0.2 z).
    chex.assert_trees_all_close(b.worst[1:], (3.0, 1.95), atol=1e-9)
    assert [site.primitive for site in report.kink_sites] == ["while"]
    text = str(report)
    assert "not inspected: while at " in text
    assert "decisions inside the loop body are not followed (its trip count is)" in text
    # Away from the kink the same function passes: the failure above is the crossing.
    assert _check(_layer_loss(_three_relus), _params(CLEAR)).ok
