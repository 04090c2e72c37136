"""Each update rule against its formula written plainly in numpy (float64, >= 100 steps, 1e-12),
against optax where the semantics coincide (1e-10), against torch.optim (float64), and the two
Nesterov forms against each other step for step."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from research.optim import schedules

NUM_STEPS = 120
SHAPES = {"kernel": (4, 3), "bias": (5,), "nested": [(2, 2, 2), ()]}


def _random_tree(seed: int):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda shape: rng.normal(size=shape), SHAPES,
                      is_leaf=lambda s: isinstance(s, tuple))


def _leaves(tree):
  return [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(tree)]


def _gradient(leaves, step):
  """A gradient that depends on the parameters (a quadratic pull) plus step-dependent noise."""
  rng = np.random.default_rng(1000 + step)
  return [0.3 * x + rng.normal(size=x.shape) for x in leaves]


def _run_rule(tx, num_steps=NUM_STEPS, seed=0, lookahead=False):
  """Runs ``tx`` in JAX (jitted), host-side gradients from ``_gradient``; returns the params
  after every step as lists of numpy leaves."""
  params = jax.tree.map(jnp.asarray, _random_tree(seed))
  treedef = jax.tree.structure(params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  trajectory = []
  for step in range(num_steps):
    point = optim.gradient_point(params, state) if lookahead else params
    grads = treedef.unflatten([jnp.asarray(g) for g in _gradient(_leaves(point), step)])
    deltas, state = update(grads, state, params)
    params = optax.apply_updates(params, deltas)
    trajectory.append(_leaves(params))
  return trajectory


# ------------------------------------------------------------------ numpy references (the formulas)


def _numpy_reference(name, hp, num_steps=NUM_STEPS, seed=0):
  """The update rules exactly as written in the issue, one leaf at a time."""
  xs = _leaves(_random_tree(seed))
  zeros = [np.zeros_like(x) for x in xs]
  v, cache, m, s = list(zeros), list(zeros), list(zeros), list(zeros)
  trajectory = []
  for t in range(num_steps):
    lr = hp["lr"](t) if callable(hp["lr"]) else hp["lr"]
    mu = hp.get("mu", 0.0)
    mu = mu(t) if callable(mu) else mu
    if name == "nesterov_lookahead":
      dxs = _gradient([x + mu * vi for x, vi in zip(xs, v)], t)
    else:
      dxs = _gradient(xs, t)
    for i, dx in enumerate(dxs):
      if name == "sgd":
        xs[i] = xs[i] + -lr * dx
      elif name == "momentum":
        v[i] = mu * v[i] - lr * dx
        xs[i] = xs[i] + v[i]
      elif name == "nesterov":
        v_prev = v[i]
        v[i] = mu * v[i] - lr * dx
        xs[i] = xs[i] + -mu * v_prev + (1 + mu) * v[i]
      elif name == "nesterov_lookahead":
        v[i] = mu * v[i] - lr * dx
        xs[i] = xs[i] + v[i]
      elif name == "adagrad":
        cache[i] = cache[i] + dx**2
        xs[i] = xs[i] + -lr * dx / (np.sqrt(cache[i]) + hp["eps"])
      elif name == "rmsprop":
        cache[i] = hp["decay_rate"] * cache[i] + (1 - hp["decay_rate"]) * dx**2
        xs[i] = xs[i] + -lr * dx / (np.sqrt(cache[i]) + hp["eps"])
      elif name in ("adam", "adam_uncorrected"):
        b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
        m[i] = b1 * m[i] + (1 - b1) * dx
        s[i] = b2 * s[i] + (1 - b2) * dx**2
        if name == "adam":
          mt = m[i] / (1 - b1 ** (t + 1))
          vt = s[i] / (1 - b2 ** (t + 1))
          xs[i] = xs[i] + -lr * mt / (np.sqrt(vt) + eps)
        else:
          xs[i] = xs[i] + -lr * m[i] / (np.sqrt(s[i]) + eps)
      else:
        raise AssertionError(name)
    trajectory.append([x.copy() for x in xs])
  return trajectory


def _inverse_time(t):
  return 0.05 / (1 + 0.03 * t)


CASES = {
    # name: (factory, reference hyperparameters)
    "sgd": (lambda lr: optim.sgd(lr), {}),
    "momentum": (lambda lr: optim.momentum(lr, mu=0.9), {"mu": 0.9}),
    "nesterov": (lambda lr: optim.nesterov(lr, mu=0.85), {"mu": 0.85}),
    "nesterov_lookahead": (lambda lr: optim.nesterov_lookahead(lr, mu=0.85), {"mu": 0.85}),
    "adagrad": (lambda lr: optim.adagrad(lr, eps=1e-8), {"eps": 1e-8}),
    "rmsprop": (lambda lr: optim.rmsprop(lr, decay_rate=0.95, eps=1e-6),
                {"decay_rate": 0.95, "eps": 1e-6}),
    "adam": (lambda lr: optim.adam(lr, beta1=0.8, beta2=0.99, eps=1e-7),
             {"beta1": 0.8, "beta2": 0.99, "eps": 1e-7}),
    "adam_uncorrected": (lambda lr: optim.adam(lr, beta1=0.8, beta2=0.99, eps=1e-7,
                                               bias_correction=False),
                         {"beta1": 0.8, "beta2": 0.99, "eps": 1e-7}),
}


def _assert_trajectories_equal(actual, expected, tol):
  assert len(actual) == len(expected)
  for step, (a_leaves, e_leaves) in enumerate(zip(actual, expected)):
    for a, e in zip(a_leaves, e_leaves):
      np.testing.assert_allclose(a, e, rtol=tol, atol=tol, err_msg=f"step {step}")


@pytest.mark.parametrize("scheduled", [False, True], ids=["constant_lr", "scheduled_lr"])
@pytest.mark.parametrize("name", list(CASES))
def test_rule_matches_numpy_formula(name, scheduled):
  factory, hp = CASES[name]
  if scheduled:
    tx = factory(schedules.inverse_time_decay(0.05, 0.03))
    hp = {**hp, "lr": _inverse_time}
  else:
    tx = factory(0.05)
    hp = {**hp, "lr": 0.05}
  actual = _run_rule(tx, lookahead=name == "nesterov_lookahead")
  _assert_trajectories_equal(actual, _numpy_reference(name, hp), tol=1e-12)
  # The trajectory really moved (the comparison is not between two frozen copies).
  assert not np.allclose(actual[-1][0], _leaves(_random_tree(0))[0])


@pytest.mark.parametrize("name", ["momentum", "nesterov", "nesterov_lookahead"])
def test_scheduled_momentum_matches_numpy_formula(name):
  mu_schedule = schedules.momentum_warmup(0.5, 0.95, steps=40)
  tx = {"momentum": optim.momentum, "nesterov": optim.nesterov,
        "nesterov_lookahead": optim.nesterov_lookahead}[name](0.05, mu=mu_schedule)
  reference = _numpy_reference(name, {"lr": 0.05, "mu": lambda t: 0.5 + 0.45 * min(t, 40) / 40})
  _assert_trajectories_equal(_run_rule(tx, lookahead=name == "nesterov_lookahead"), reference,
                             1e-12)


# ------------------------------------------------------------------------------------- vs optax

OPTAX_COUNTERPARTS = {
    "sgd": (optim.sgd(0.05), optax.sgd(0.05)),
    "momentum": (optim.momentum(0.05, mu=0.9), optax.sgd(0.05, momentum=0.9)),
    "nesterov": (optim.nesterov(0.05, mu=0.9), optax.sgd(0.05, momentum=0.9, nesterov=True)),
    "rmsprop": (optim.rmsprop(0.01, decay_rate=0.9, eps=1e-6),
                optax.rmsprop(0.01, decay=0.9, eps=1e-6, eps_in_sqrt=False)),
    "adam": (optim.adam(0.01, beta1=0.9, beta2=0.999, eps=1e-8),
             optax.adam(0.01, b1=0.9, b2=0.999, eps=1e-8)),
}


@pytest.mark.parametrize("name", list(OPTAX_COUNTERPARTS))
def test_rule_matches_optax_for_constant_learning_rate(name):
  ours, theirs = OPTAX_COUNTERPARTS[name]
  _assert_trajectories_equal(_run_rule(ours), _run_rule(theirs), tol=1e-10)


def test_momentum_differs_from_optax_when_learning_rate_changes():
  """Velocity form (lr inside v) vs optax.trace (lr scales the whole trace): the first step is the
  same, later steps differ once the learning rate has changed."""
  schedule = schedules.step_decay(0.05, 0.1, every=10)
  ours = _run_rule(optim.momentum(schedule, mu=0.9), num_steps=12)
  theirs = _run_rule(optax.sgd(schedule, momentum=0.9), num_steps=12)
  _assert_trajectories_equal(ours[:10], theirs[:10], tol=1e-10)
  # Step 11 (t = 10) uses lr 0.005: ours keeps the old velocity, optax rescales it by 0.1.
  assert not np.allclose(ours[10][0], theirs[10][0], rtol=1e-3)


def test_adagrad_differs_from_optax_and_why():
  """optax.adagrad starts the cache at 0.1 and puts eps inside the sqrt: -lr g / sqrt(cache + eps).
  Ours (CS231n, torch.optim.Adagrad): cache starts at 0, -lr g / (sqrt(cache) + eps)."""
  ours = _run_rule(optim.adagrad(0.05, eps=1e-8))
  default_optax = _run_rule(optax.adagrad(0.05))
  assert not np.allclose(ours[0][0], default_optax[0][0], rtol=1e-3)
  # With a zero initial cache and a negligible eps the two formulas agree.
  aligned_optax = _run_rule(optax.adagrad(0.05, initial_accumulator_value=0.0, eps=1e-30))
  aligned_ours = _run_rule(optim.adagrad(0.05, eps=1e-30))
  _assert_trajectories_equal(aligned_ours, aligned_optax, tol=1e-10)


# ------------------------------------------------------------------------------------- vs torch

def _torch_trajectory(make_optimizer, num_steps=NUM_STEPS, seed=0):
  torch = pytest.importorskip("torch")
  tensors = [torch.tensor(x, dtype=torch.float64, requires_grad=True)
             for x in _leaves(_random_tree(seed))]
  optimizer = make_optimizer(torch, tensors)
  trajectory = []
  for step in range(num_steps):
    grads = _gradient([t.detach().numpy().copy() for t in tensors], step)
    for tensor, grad in zip(tensors, grads):
      tensor.grad = torch.tensor(grad, dtype=torch.float64)
    optimizer.step()
    trajectory.append([t.detach().numpy().copy() for t in tensors])
  return trajectory


TORCH_COUNTERPARTS = {
    "sgd": (optim.sgd(0.05), lambda torch, p: torch.optim.SGD(p, lr=0.05)),
    "momentum": (optim.momentum(0.05, mu=0.9),
                 lambda torch, p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    "nesterov": (optim.nesterov(0.05, mu=0.9),
                 lambda torch, p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "adagrad": (optim.adagrad(0.05, eps=1e-8),
                lambda torch, p: torch.optim.Adagrad(p, lr=0.05, eps=1e-8)),
    "rmsprop": (optim.rmsprop(0.01, decay_rate=0.99, eps=1e-8),
                lambda torch, p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99, eps=1e-8)),
    "adam": (optim.adam(0.01, beta1=0.9, beta2=0.999, eps=1e-8),
             lambda torch, p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8)),
}


@pytest.mark.parametrize("name", list(TORCH_COUNTERPARTS))
def test_rule_matches_torch_optim_in_float64(name):
  ours, make_torch = TORCH_COUNTERPARTS[name]
  _assert_trajectories_equal(_run_rule(ours), _torch_trajectory(make_torch), tol=1e-10)


# ----------------------------------------------------------------- the two Nesterov forms agree


def _quadratic_loss(params):
  a = jnp.diag(jnp.array([1.0, 10.0, 0.1]))
  x = params["x"]
  return 0.5 * x @ a @ x + jnp.sum(jnp.array([1.0, -2.0, 0.5]) * x)


def _mlp_problem():
  rng = np.random.default_rng(3)
  inputs = jnp.asarray(rng.normal(size=(32, 5)))
  targets = jnp.asarray(rng.normal(size=(32, 2)))
  params = {"hidden": {"kernel": jnp.asarray(rng.normal(size=(5, 8)) * 0.5), "bias": jnp.zeros(8)},
            "out": {"kernel": jnp.asarray(rng.normal(size=(8, 2)) * 0.5), "bias": jnp.zeros(2)}}

  def loss(p):
    hidden = jnp.tanh(inputs @ p["hidden"]["kernel"] + p["hidden"]["bias"])
    return jnp.mean((hidden @ p["out"]["kernel"] + p["out"]["bias"] - targets) ** 2)

  return loss, params


@pytest.mark.parametrize("problem", ["quadratic", "mlp"])
def test_nesterov_forms_follow_the_same_trajectory(problem):
  """The rewritten form's stored x equals the look-ahead form's x + mu * v, step for step."""
  if problem == "quadratic":
    loss, params = _quadratic_loss, {"x": jnp.array([3.0, -1.0, 2.0])}
  else:
    loss, params = _mlp_problem()
  mu = 0.9
  rewritten, lookahead = optim.nesterov(0.02, mu=mu), optim.nesterov_lookahead(0.02, mu=mu)
  grad = jax.jit(jax.grad(loss))

  @jax.jit
  def rewritten_step(params, state):
    deltas, state = rewritten.update(grad(params), state, params)
    return optax.apply_updates(params, deltas), state

  @jax.jit
  def lookahead_step(params, state):
    # The real-training-step pattern: ask the optimizer where to take the gradient.
    deltas, state = lookahead.update(grad(optim.gradient_point(params, state)), state, params)
    return optax.apply_updates(params, deltas), state

  x_rewritten, s_rewritten = params, rewritten.init(params)
  x_lookahead, s_lookahead = params, lookahead.init(params)
  for _ in range(100):
    x_rewritten, s_rewritten = rewritten_step(x_rewritten, s_rewritten)
    x_lookahead, s_lookahead = lookahead_step(x_lookahead, s_lookahead)
    ahead = optim.gradient_point(x_lookahead, s_lookahead)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12),
                 x_rewritten, ahead)
  assert float(loss(x_rewritten)) < 0.5 * float(loss(params))
  assert math.isfinite(float(loss(x_lookahead)))


def test_gradient_point_is_params_for_other_rules():
  params = {"w": jnp.ones((2, 2))}
  for tx in (optim.sgd(0.1), optim.nesterov(0.1), optim.adam(0.1)):
    state = tx.init(params)
    state = tx.update(params, state, params)[1]
    assert optim.gradient_point(params, state) is params
