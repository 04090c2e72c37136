"""Second-order rules: dense Newton, Hessian-free Newton, L-BFGS (research.optim.newton,
hessian_free, lbfgs, damping, second_order). Float64 (conftest enables x64)."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from research.optim import damping as lm
from research.optim.hessian_free import conjugate_gradient, hessian_free_newton
from research.optim.lbfgs import LBFGSState, lbfgs, remember_pair, two_loop_recursion
from research.optim.newton import dense_hessian_bytes, newton
from research.optim.second_order import evaluation_count
from research.train import make_step
from research.optim.rules import sgd

# ----------------------------------------------------------------------------- problems


def _spd(rng: np.random.Generator, n: int, condition: float = 100.0) -> np.ndarray:
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  return (q * np.geomspace(1.0, condition, n)) @ q.T


def _quadratic(n: int = 5, seed: int = 0):
  """f(x) = 0.5 x.A.x - b.x over params {'a': x[:2], 'b': x[2:]}, its minimizer and Hessian A."""
  rng = np.random.default_rng(seed)
  a, b = jnp.asarray(_spd(rng, n)), jnp.asarray(rng.normal(size=n))

  def loss(params):
    x = jnp.concatenate([params["a"], params["b"]])
    return 0.5 * x @ a @ x - b @ x

  x_star = jnp.linalg.solve(a, b)
  return loss, {"a": x_star[:2], "b": x_star[2:]}, a


@functools.cache
def _logistic(seed: int = 0, n: int = 200, d: int = 6, l2: float = 1e-2):
  """L2-regularized binary logistic regression, params {'w': (d,), 'b': ()}."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n, d)))
  y = jnp.asarray((x @ rng.normal(size=d) + 0.5 * rng.normal(size=n) > 0).astype(np.float64))

  def loss(params):
    logits = x @ params["w"] + params["b"]
    return (jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))
            + 0.5 * l2 * params["w"] @ params["w"])

  return loss, {"w": jnp.zeros(d), "b": jnp.zeros([])}


def rosenbrock(x: jax.Array) -> jax.Array:
  return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


ROSENBROCK_START = jnp.array([-1.2, 1.0, -0.5, 0.8])


@functools.cache
def _compiled(tx, loss):
  """One jitted full-batch step and gradient per (rule, problem): compiling the line search
  dominates these tests' time, so tests that share a rule and a problem share the program."""
  return jax.jit(make_step(tx, loss, full_batch=True)), jax.jit(jax.grad(loss))


#: Shared instances (the cache above keys on the transformation object).
LBFGS10 = lbfgs(memory_size=10)
OPTAX_LBFGS10 = optax.lbfgs(memory_size=10)


def _run(tx, loss, params, steps, *, gtol=None):
  """Full-batch steps; stops early when max|grad| <= gtol. Returns (params, state, steps done)."""
  step, grad = _compiled(tx, loss)
  state = tx.init(params)
  for i in range(steps):
    if gtol is not None and max(float(jnp.max(jnp.abs(g)))
                                for g in jax.tree.leaves(grad(params))) <= gtol:
      return params, state, i
    params, state, _, _ = step(params, state)
  return params, state, steps


def _scipy_lbfgs(loss, params, gtol):
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  value_and_grad = jax.jit(jax.value_and_grad(lambda v: loss(unravel(v))))

  def fun(v):
    value, grad = value_and_grad(jnp.asarray(v))
    return float(value), np.asarray(grad)

  result = scipy.optimize.minimize(fun, np.asarray(flat), jac=True, method="L-BFGS-B",
                                   options=dict(maxcor=10, gtol=gtol, ftol=0.0, maxiter=1000))
  return unravel(jnp.asarray(result.x)), result


# ----------------------------------------------------------------------------- dense Newton


START = {"a": jnp.array([3.0, -2.0]), "b": jnp.array([1.0, 5.0, -4.0])}


@pytest.mark.parametrize("seed", [0, 1])
def test_newton_solves_a_convex_quadratic_in_one_step(seed):
  loss, minimum, _ = _quadratic(seed=seed)
  params, state, _ = _run(newton(damping=0.0, adaptive_damping=False), loss, START, steps=1)
  chex.assert_trees_all_close(params, minimum, atol=1e-10)
  # jax.hessian of n = 5 parameters is 5 Hessian-vector products; nothing else evaluated.
  assert evaluation_count(state)._asdict() == {"value_and_grad_calls": 0, "value_calls": 0,
                                               "hvp_calls": 5}


def test_newton_damping_is_levenberg_marquardt():
  loss, _, hessian = _quadratic(seed=2)
  x0, unravel = jax.flatten_util.ravel_pytree(START)
  g = jax.flatten_util.ravel_pytree(jax.grad(loss)(START))[0]
  expected = x0 - np.linalg.solve(hessian + 0.5 * np.eye(5), g)  # x - (H + damping I)^-1 g
  params, _, _ = _run(newton(damping=0.5, adaptive_damping=False), loss, START, steps=1)
  chex.assert_trees_all_close(params, unravel(expected), atol=1e-12)


def test_adaptive_damping_shrinks_after_a_good_step():
  loss, _, _ = _quadratic()
  _, state, _ = _run(newton(damping=1e-3), loss, START, steps=1)
  # rho ~ 1 on a quadratic: damping * 2/3; value and gradient at the new point stored for reuse.
  np.testing.assert_allclose(state.damping, 1e-3 * 2 / 3, rtol=1e-12)
  assert evaluation_count(state).value_and_grad_calls == 1


def test_adaptive_damping_rejects_a_step_that_raises_the_loss():
  # sqrt(1 + x**2) at x = 2: g = 2/sqrt(5), H = 5**-1.5, the Newton step -g/H = -10 overshoots
  # to x = -8 (loss sqrt(65) > sqrt(5)).
  loss = lambda p: jnp.sqrt(1.0 + p["x"] ** 2)
  start = {"x": jnp.asarray(2.0)}
  for tx in (newton(damping=1e-6), hessian_free_newton(damping=1e-6)):
    params, state, _ = _run(tx, loss, start, steps=1)
    assert float(params["x"]) == 2.0
    np.testing.assert_allclose(state.damping, 1.5e-6, rtol=1e-12)
    np.testing.assert_allclose(state.value, np.sqrt(5.0), rtol=1e-15)  # value at the kept point


def test_adaptive_newton_decreases_rosenbrock_monotonically_to_the_minimum():
  # 2-D (the 4-D function also has a local minimum near (-0.78, 0.61, 0.38, 0.15)).
  tx = newton(damping=1e-2)
  step = jax.jit(make_step(tx, rosenbrock, full_batch=True))
  x = jnp.array([-1.2, 1.0])
  state = tx.init(x)
  values = []
  for _ in range(60):  # the damping grows by only 3/2 per rejected step: ~20 steps are rejections
    x, state, value, _ = step(x, state)
    values.append(float(value))
  assert all(b <= a for a, b in zip(values, values[1:]))
  chex.assert_trees_all_close(x, jnp.ones(2), atol=1e-8)


def test_dense_newton_refuses_a_million_parameters_with_the_memory_figure():
  params = {"kernel": jnp.zeros((1000, 1000), jnp.float32)}
  assert dense_hessian_bytes(params) == 4 * 10**12
  with pytest.raises(ValueError, match=r"1,000,000 parameters has 1e\+12 entries x 4 bytes "
                                       r"\(float32\) = 3,725.3 GiB.*hessian_free_newton or lbfgs"):
    newton().init(params)


def test_dense_newton_limit_is_configurable():
  params = {"w": jnp.zeros(10)}  # 10 x 10 float64 = 800 bytes
  newton(max_hessian_bytes=800).init(params)
  with pytest.raises(ValueError, match="10 parameters"):
    newton(max_hessian_bytes=799).init(params)


# ----------------------------------------------------------------------------- Hessian-free


def test_hessian_free_matches_exact_newton():
  # Fixed damping: both solve (H + damping I) p = -g, one with the dense H, one by CG on
  # Hessian-vector products (the adaptive rule then acts identically on identical steps).
  loss, start = _logistic()
  exact = newton(damping=1e-2, adaptive_damping=False)
  hf = hessian_free_newton(damping=1e-2, cg_max_iters=50, cg_tol=1e-12, adaptive_damping=False)
  for steps in (1, 4):
    newton_params, _, _ = _run(exact, loss, start, steps)
    hf_params, hf_state, _ = _run(hf, loss, start, steps)
    chex.assert_trees_all_close(hf_params, newton_params, atol=1e-9)
  # CG on 7 unknowns needs at most 7 products (exact arithmetic), a few more in floating point.
  assert 1 <= int(hf_state.cg_iterations) <= 10


def test_conjugate_gradient_solves_spd_systems_and_stops_on_negative_curvature():
  a = jnp.asarray(_spd(np.random.default_rng(3), 6))
  g = jnp.arange(1.0, 7.0)
  result = conjugate_gradient(lambda v: a @ v, g, max_iters=50, tol=1e-12)
  chex.assert_trees_all_close(result.solution, -jnp.linalg.solve(a, g), atol=1e-10)
  chex.assert_trees_all_close(result.matvec_solution, a @ result.solution, atol=1e-10)
  # Indefinite: d = -g has d.A.d = 1 - 1 = 0 at the first iteration -> steepest descent p = -g.
  indefinite = jnp.diag(jnp.array([1.0, -1.0]))
  result = conjugate_gradient(lambda v: indefinite @ v, jnp.array([1.0, -1.0]), 10, 1e-8)
  chex.assert_trees_all_close(result.solution, jnp.array([-1.0, 1.0]))
  assert int(result.iterations) == 1


def test_hessian_free_counts_one_hvp_per_cg_iteration():
  loss, start = _logistic()
  _, state, _ = _run(hessian_free_newton(damping=1.0, cg_max_iters=3, cg_tol=1e-12), loss, start, 2)
  assert int(state.cg_iterations) == 3
  assert evaluation_count(state)._asdict() == {"value_and_grad_calls": 2, "value_calls": 0,
                                               "hvp_calls": 6}


# ----------------------------------------------------------------------------- L-BFGS


_two_loop = jax.jit(two_loop_recursion)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), pairs=st.integers(1, 4), gamma=st.floats(0.01, 10.0))
def test_two_loop_recursion_satisfies_the_newest_secant_equation(seed, pairs, gamma):
  # Whatever the older pairs and H_0, the BFGS update makes H_k y_{k-1} = s_{k-1} exactly.
  # Memory of 4 slots, oldest first; the first 4 - pairs slots are empty (rho = 0).
  rng = np.random.default_rng(seed)
  a = _spd(rng, 5)
  s = rng.normal(size=(4, 5))
  y = s @ a
  rhos = 1.0 / np.einsum("ij,ij->i", s, y)
  s[:4 - pairs], y[:4 - pairs], rhos[:4 - pairs] = 0.0, 0.0, 0.0
  r = _two_loop(jnp.asarray(y[-1]), jnp.asarray(s), jnp.asarray(y), jnp.asarray(rhos),
                jnp.asarray(gamma))
  np.testing.assert_allclose(r, s[-1], rtol=1e-8, atol=1e-10)


def test_two_loop_recursion_with_empty_memory_scales_the_gradient():
  empty = jnp.zeros((3, 4))
  g = jnp.arange(4.0)
  chex.assert_trees_all_close(two_loop_recursion(g, empty, empty, jnp.zeros(3), 0.25), 0.25 * g)


def test_pairs_without_positive_curvature_are_skipped():
  state = LBFGSState(steps=jnp.ones((2, 2)), grad_changes=jnp.ones((2, 2)), rhos=jnp.full(2, 0.5),
                     count=jnp.asarray(3), linesearch=None, evaluations=None)
  steps, changes, rhos = remember_pair(state, jnp.array([1.0, 0.0]), jnp.array([-1.0, 0.0]))
  chex.assert_trees_all_close((steps, changes, rhos), (state.steps, state.grad_changes, state.rhos))
  steps, changes, rhos = remember_pair(state, jnp.array([2.0, 0.0]), jnp.array([4.0, 0.0]))
  chex.assert_trees_all_close(steps, jnp.array([[1.0, 1.0], [2.0, 0.0]]))  # oldest forgotten
  chex.assert_trees_all_close(rhos, jnp.array([0.5, 1 / 8]))


@pytest.mark.parametrize("problem", ["logistic", "rosenbrock"])
def test_lbfgs_matches_scipy_lbfgsb(problem):
  if problem == "logistic":
    loss, start = _logistic()
  else:
    loss, start = rosenbrock, ROSENBROCK_START
  gtol = 1e-9
  expected, result = _scipy_lbfgs(loss, start, gtol)
  params, state, iterations = _run(LBFGS10, loss, start, 300, gtol=gtol)
  chex.assert_trees_all_close(params, expected, atol=1e-7)
  # Different line searches (scipy: More-Thuente with c1 = 1e-3; ours: zoom with c1 = 1e-4), so
  # the counts agree within a few iterations, not exactly.
  assert abs(iterations - result.nit) <= max(3, 0.15 * result.nit), (iterations, result.nit)
  assert 0 < evaluation_count(state).value_and_grad_calls <= 2 * result.nfev


@pytest.mark.parametrize("problem", ["logistic", "rosenbrock"])
def test_lbfgs_matches_optax_lbfgs_iterate_by_iterate(problem):
  # Same zoom line search and same first step: the iterates agree to rounding.
  if problem == "logistic":
    loss, start = _logistic()
  else:
    loss, start = rosenbrock, ROSENBROCK_START
  ours_step, _ = _compiled(LBFGS10, loss)
  theirs_step, _ = _compiled(OPTAX_LBFGS10, loss)
  ours, theirs = (start, LBFGS10.init(start)), (start, OPTAX_LBFGS10.init(start))
  for _ in range(30):  # past the memory size: old pairs are being forgotten
    ours = ours_step(*ours)[:2]
    theirs = theirs_step(*theirs)[:2]
    chex.assert_trees_all_close(ours[0], theirs[0], atol=1e-8, rtol=1e-8)


def test_full_batch_step_reuses_the_line_search_gradient():
  loss, start = _logistic()
  step, _ = _compiled(LBFGS10, loss)
  params, state = start, LBFGS10.init(start)
  evaluated = []
  for _ in range(4):
    new_params, state, value, fresh = step(params, state)
    evaluated.append(bool(fresh))
    np.testing.assert_allclose(value, loss(params), rtol=1e-12)  # reused value is the loss here
    params = new_params
  assert evaluated == [True, False, False, False]


def test_minibatch_pairs_take_both_gradients_on_the_same_batch():
  rng = np.random.default_rng(0)
  x, y = jnp.asarray(rng.normal(size=(64, 3))), jnp.asarray(rng.normal(size=64))

  def batch_loss(w, xb, yb):
    return jnp.mean((xb @ w - yb) ** 2) + 0.01 * jnp.sum(w**4)

  tx = lbfgs(memory_size=3)
  grad = jax.jit(jax.grad(batch_loss))
  step = jax.jit(make_step(tx, batch_loss, full_batch=False))
  w, state = jnp.zeros(3), tx.init(jnp.zeros(3))
  for batch in range(4):
    xb, yb = x[16 * batch:16 * (batch + 1)], y[16 * batch:16 * (batch + 1)]
    new_w, state, _, fresh = step(w, state, xb, yb)
    assert bool(fresh)  # mini-batches never reuse the previous batch's gradient
    chex.assert_trees_all_close(state.steps[-1], new_w - w, atol=1e-12)
    chex.assert_trees_all_close(state.grad_changes[-1], grad(new_w, xb, yb) - grad(w, xb, yb),
                                atol=1e-10)
    w = new_w
  full = batch_loss(w, x, y)
  assert full < batch_loss(jnp.zeros(3), x, y)


def test_make_step_drives_first_order_rules_too():
  loss, start = _logistic()
  params, state, _ = _run(sgd(0.5), loss, start, 3)
  expected = start
  for _ in range(3):
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, expected, jax.grad(loss)(expected))
  chex.assert_trees_all_close(params, expected, atol=1e-12)
  assert evaluation_count(state) is None


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("factory, message", [
    (lambda: lbfgs(memory_size=0), "memory_size must be an integer >= 1, got 0"),
    (lambda: lbfgs(memory_size=2.5), "memory_size must be an integer >= 1, got 2.5"),
    (lambda: newton(damping=-1.0), r"damping must be in \[0, inf\), got -1.0"),
    (lambda: newton(damping=0.0), "adaptive_damping needs damping > 0"),
    (lambda: hessian_free_newton(damping=float("nan")), "damping must be in"),
    (lambda: hessian_free_newton(damping=0.0), "adaptive_damping needs damping > 0"),
    (lambda: hessian_free_newton(cg_max_iters=0), "cg_max_iters must be an integer >= 1, got 0"),
    (lambda: hessian_free_newton(cg_tol=0.0), r"cg_tol must be in \(0, inf\), got 0.0"),
    (lambda: newton(max_hessian_bytes=0), "max_hessian_bytes must be an integer >= 1"),
])
def test_bad_hyperparameters_raise(factory, message):
  with pytest.raises(ValueError, match=message):
    factory()


def test_update_without_value_fn_says_how_to_call_it():
  for tx in (newton(), hessian_free_newton(), lbfgs()):
    params = jnp.ones(2)
    with pytest.raises(TypeError, match=r"needs value_fn=.*tx.update\(grads, state, params"):
      tx.update(params, tx.init(params), params)


def test_lbfgs_rejects_a_line_search_that_does_not_store_the_gradient():
  tx = lbfgs(linesearch=optax.scale_by_backtracking_linesearch(max_backtracking_steps=10))
  with pytest.raises(ValueError, match="store_grad=True"):
    tx.init(jnp.ones(2))


def test_reduction_ratio_guards():
  assert float(lm.reduction_ratio(jnp.asarray(-1.0), jnp.asarray(-2.0))) == 0.5
  assert float(lm.reduction_ratio(jnp.asarray(-1.0), jnp.asarray(0.5))) == -np.inf
  assert float(lm.reduction_ratio(jnp.asarray(np.nan), jnp.asarray(-1.0))) == -np.inf
  assert float(lm.adapt_damping(jnp.asarray(1.0), jnp.asarray(0.5))) == 1.0
