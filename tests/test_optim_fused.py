"""The fused CPU update kernels (research.optim.fused) against the pure-JAX rules they replace.

Every rule through ``fused.update_and_apply`` (the kernel writes ``p + delta`` and the state in
one pass) equals ``tx.update`` + ``optax.apply_updates`` in pure JAX to the bit, step by step, in
float32 (the issue allows 1 ulp; the kernels replicate the FMAs XLA:CPU contracts, so the measured
distance is 0 ulp) under jit and under vmap (a population, one learning rate per member), with
schedules;
in float64 it follows the numpy formulas of tests/test_optim_rules.py over 120 steps. bfloat16
leaves fall back to the pure-JAX formula. Tests that need the compiled kernel skip, saying why,
when it is not built.
"""
from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from research import optim
from research.optim import fused, schedules
from tests import test_optim_rules as rule_tests  # its numpy formulas and cases

# pylint: disable=protected-access

needs_kernel = pytest.mark.skipif(not fused.available(), reason=f"update rules: {fused.status()}")

TARGET = "trainlab_fused_update"

#: name -> factory of the public rule (float32 tests use larger steps than the float64 CASES)
RULES = {
    "sgd": lambda: optim.sgd(0.1),
    "momentum": lambda: optim.momentum(0.1, mu=0.9),
    "nesterov": lambda: optim.nesterov(0.1, mu=0.9),
    "nesterov_lookahead": lambda: optim.nesterov_lookahead(0.1, mu=0.9),
    "adagrad": lambda: optim.adagrad(0.1, eps=1e-8),
    "rmsprop": lambda: optim.rmsprop(0.01, decay_rate=0.9, eps=1e-6),
    "adam": lambda: optim.adam(0.01, beta1=0.9, beta2=0.999, eps=1e-8),
    "adam_uncorrected": lambda: optim.adam(0.01, bias_correction=False),
}

#: rules whose update_and_apply stays pure JAX (measured faster than the kernel, see fused.RULES)
PURE_BY_CHOICE = {"sgd"}

# A leaf of 77,100 values spans three of the kernel's 32,768-value chunks (so several threads
# share it); the others are a conv kernel, a bias and a scalar.
SHAPES = {"dense": (300, 257), "conv": (3, 3, 8, 16), "bias": (33,), "scale": ()}


def _tree(rng, dtype=jnp.float32, members=None, shapes=None):
  lead = () if members is None else (members,)
  return {name: jnp.asarray(rng.normal(size=lead + shape), dtype)
          for name, shape in (shapes or SHAPES).items()}


def _ulps(a, b) -> int:
  """Largest distance in units in the last place between two float arrays of one dtype."""
  a, b = np.asarray(a), np.asarray(b)
  assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
  ints = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
  def ordered(x):  # IEEE bit patterns as integers in the order of the values
    bits = x.view(ints).astype(np.int64)
    return np.where(bits < 0, -(bits & np.iinfo(ints).max), bits)
  return int(np.max(np.abs(ordered(a) - ordered(b)), initial=0))


def _max_ulps(tree_a, tree_b) -> int:
  leaves_a, leaves_b = jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)
  assert len(leaves_a) == len(leaves_b)
  return max(_ulps(a, b) for a, b in zip(leaves_a, leaves_b)
             if jnp.issubdtype(a.dtype, jnp.floating))


def _fused_step(tx):
  return lambda params, state, grads: fused.update_and_apply(tx, grads, state, params)


def _pure_step(tx):
  def step(params, state, grads):
    deltas, state = tx.update(grads, state, params)
    return optax.apply_updates(params, deltas), state
  return step


def _compile(step, mode, *args, vmapped=False):
  """``step`` jitted (and vmapped) and compiled now, in ``TRAINLAB_FUSED=mode``."""
  with fused.forced_mode(mode):
    lowered = jax.jit(jax.vmap(step) if vmapped else step).lower(*args)
    return lowered.compile(), lowered.as_text()


def _compare_steps(tx, params, state, grads_fn, num_steps, vmapped=False):
  """Runs the fused and the pure step from the SAME inputs every step (the pure path's state
  carries on); returns the largest ulp distance seen and whether the kernel was in the program."""
  fused_step, fused_text = _compile(_fused_step(tx), "1", params, state, grads_fn(0),
                                    vmapped=vmapped)
  pure_step, pure_text = _compile(_pure_step(tx), "0", params, state, grads_fn(0),
                                  vmapped=vmapped)
  assert TARGET not in pure_text
  worst = 0
  for step in range(num_steps):
    grads = grads_fn(step)
    expected = pure_step(params, state, grads)
    worst = max(worst, _max_ulps(fused_step(params, state, grads), expected))
    params, state = expected
  return worst, TARGET in fused_text


# ------------------------------------------------------------------ float32: the pure rule's bits


@needs_kernel
@pytest.mark.parametrize("name", list(RULES))
def test_fused_rule_equals_pure_rule_in_float32_under_jit(name):
  rng = np.random.default_rng(0)
  tx = RULES[name]()
  params = _tree(rng)
  worst, used = _compare_steps(tx, params, tx.init(params), lambda _: _tree(rng), num_steps=8)
  assert used == (name not in PURE_BY_CHOICE), "the fused program does not call the kernel"
  assert worst == 0, f"{name}: {worst} ulp from the pure-JAX rule"


@needs_kernel
@pytest.mark.parametrize("name", list(RULES))
def test_fused_rule_equals_pure_rule_in_a_vmapped_population(name):
  """Three members, each with its own learning rate (a (3,) buffer in the kernel call); the 40,000
  values of a member's big leaf straddle the kernel's chunks."""
  rng = np.random.default_rng(1)
  tx = RULES[name]()
  shapes = {"dense": (40_000,), "bias": (7,), "scale": ()}
  params = _tree(rng, members=3, shapes=shapes)
  state = optim.init_population(tx, params, {"learning_rate": np.array([0.1, 0.01, 0.003])})
  worst, used = _compare_steps(tx, params, state, lambda _: _tree(rng, members=3, shapes=shapes),
                               num_steps=5, vmapped=True)
  assert used == (name not in PURE_BY_CHOICE), "the vmapped program does not call the kernel"
  assert worst == 0, f"{name}: {worst} ulp from the pure-JAX rule"


def _scheduled(name):
  lr = schedules.exponential_decay(0.1, 0.3)
  warmup = schedules.momentum_warmup(0.5, 0.95, steps=6)
  return {"momentum": lambda: optim.momentum(lr, mu=warmup),
          "nesterov": lambda: optim.nesterov(lr, mu=warmup),
          "adam": lambda: optim.adam(lr), "rmsprop": lambda: optim.rmsprop(lr)}[name]()


@needs_kernel
@pytest.mark.parametrize("name", ["momentum", "nesterov", "adam", "rmsprop"])
def test_fused_rule_follows_schedules_without_recompiling(name):
  """A decaying learning rate (and for momentum rules a momentum warm-up) is read from the state
  every step: same bits as the pure rule, and the jitted step compiles once while it changes.
  (x64 off, as in training: with x64 on a schedule yields float64 values, see the next test.)"""
  rng = np.random.default_rng(2)
  with jax.enable_x64(False):
    tx = _scheduled(name)
    params = _tree(rng)
    state = tx.init(params)
    worst, used = _compare_steps(tx, params, state, lambda _: _tree(rng), num_steps=8)
    assert used and worst == 0, (used, worst)

    with fused.forced_mode("1"):
      step = jax.jit(_fused_step(tx))
      for _ in range(4):
        params, state = step(params, state, _tree(rng))
      state = optim.scale_learning_rate(state, 0.5)  # a plateau drop: a new value in the state
      params, state = step(params, state, _tree(rng))
    assert step._cache_size() == 1
    assert float(optim.get_learning_rate(state)) == pytest.approx(0.5 * 0.1 * np.exp(-0.3 * 4),
                                                                 rel=1e-6)


def test_float64_scalars_on_float32_leaves_fall_back_to_pure_jax():
  """Under x64 a schedule yields float64 values, and the pure rule then computes float32 leaves in
  float64 before rounding; the kernel (which computes in the leaves' precision) leaves them to
  the pure formula."""
  rng = np.random.default_rng(11)
  tx = _scheduled("adam")
  params = _tree(rng)
  worst, used = _compare_steps(tx, params, tx.init(params), lambda _: _tree(rng), num_steps=3)
  assert not used and worst == 0


@needs_kernel
@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3], ids=["no_decay", "decay"])
def test_get_optimizer_path_uses_the_kernel_and_equals_pure(name, weight_decay):
  """The transformation a run builds (``inject_hyperparams`` around the rule, chained after the
  weight decay rule when that is non-zero; step learning-rate schedule, momentum warm-up) applies
  its update in the kernel (x64 off, as in training)."""
  rng = np.random.default_rng(3)
  config = ml_collections.ConfigDict({
      "name": name, "learning_rate": 0.05, "mu": 0.9, "beta1": 0.9, "beta2": 0.999,
      "decay_rate": 0.99, "eps": 1e-8, "bias_correction": True, "weight_decay": weight_decay,
      "schedule": {"name": "step", "factor": 0.5, "every": 1},
      "momentum_schedule": {"enabled": name in ("momentum", "nesterov", "nesterov_lookahead"),
                            "start": 0.5, "end": 0.9, "epochs": 2}})
  with jax.enable_x64(False):
    tx = optim.get_optimizer(config, steps_per_epoch=2)
    params = _tree(rng)
    worst, used = _compare_steps(tx, params, tx.init(params), lambda _: _tree(rng), num_steps=6)
  assert used == (name not in PURE_BY_CHOICE), "get_optimizer's transformation misses the kernel"
  assert worst == 0, f"{name}: {worst} ulp from the pure-JAX rule"


#: the plain rules with constant (Python float) hyperparameters, compiled into the step
PLAIN_RULES = {
    "sgd": lambda: optim.rules.sgd_rule(0.05),
    "momentum": lambda: optim.rules.momentum_rule(0.05, 0.9),
    "nesterov": lambda: optim.rules.nesterov_rule(0.05, 0.9),
    "nesterov_lookahead": lambda: optim.rules.nesterov_lookahead_rule(0.05, 0.9),
    "adagrad": lambda: optim.rules.adagrad_rule(0.05, 1e-8),
    "rmsprop": lambda: optim.rules.rmsprop_rule(0.05, 0.99, 1e-8),
    "adam": lambda: optim.rules.adam_rule(0.05, 0.9, 0.999, 1e-8),
    "adam_uncorrected": lambda: optim.rules.adam_rule(0.05, 0.9, 0.999, 1e-8, False),
}


@needs_kernel
@pytest.mark.parametrize("name", list(PLAIN_RULES))
def test_plain_rule_with_constant_hyperparameters_uses_the_kernel(name):
  """A plain rule (no hyperparameters in the state: they are constants of the program) applies
  its update in the kernel too, to the pure rule's bits."""
  rng = np.random.default_rng(5)
  with jax.enable_x64(False):
    tx = PLAIN_RULES[name]()
    params = _tree(rng)
    worst, used = _compare_steps(tx, params, tx.init(params), lambda _: _tree(rng), num_steps=6)
  assert used == (name not in PURE_BY_CHOICE), "the plain rule's step misses the kernel"
  assert worst == 0, f"{name}: {worst} ulp from the pure-JAX rule"


@needs_kernel
def test_update_is_in_place_with_donated_buffers():
  """With params and state donated, the kernel's outputs alias its inputs: the compiled step copies
  no parameter-sized buffer and allocates none for the update."""
  rng = np.random.default_rng(4)
  tx = optim.adam(1e-3)
  params = _tree(rng)
  state = tx.init(params)
  text = jax.jit(_fused_step(tx), donate_argnums=(0, 1)).lower(
      params, state, _tree(rng)).compile().as_text()
  calls = [line for line in text.splitlines() if TARGET in line]
  assert len(calls) == 1 and "output_to_operand_aliasing" in calls[0]
  for shape in SHAPES.values():
    pattern = re.escape(f"f32[{','.join(map(str, shape))}]") + r"\{[^}]*\} copy\("
    assert not re.search(pattern, text), f"a buffer of shape {shape} is copied"


# ------------------------------------------------------------------------ float64: the formulas


def _run_fused(tx, lookahead: bool, kernel: bool = True):
  """tests/test_optim_rules.py's ``_run_rule`` through ``update_and_apply`` (float64); ``kernel``:
  whether the program must call the kernel."""
  params = jax.tree.map(jnp.asarray, rule_tests._random_tree(0))
  treedef = jax.tree.structure(params)
  state = tx.init(params)
  with fused.forced_mode("1"):
    step = jax.jit(_fused_step(tx))
    grads0 = jax.tree.map(jnp.zeros_like, params)
    assert (TARGET in step.lower(params, state, grads0).as_text()) == kernel
    trajectory = []
    for t in range(rule_tests.NUM_STEPS):
      point = optim.gradient_point(params, state) if lookahead else params
      gradient = rule_tests._gradient(rule_tests._leaves(point), t)
      grads = treedef.unflatten([jnp.asarray(g) for g in gradient])
      params, state = step(params, state, grads)
      trajectory.append(rule_tests._leaves(params))
  return trajectory


@needs_kernel
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant_lr", "scheduled_lr"])
@pytest.mark.parametrize("name", list(rule_tests.CASES))
def test_fused_rule_matches_numpy_formula_in_float64(name, scheduled):
  factory, hp = rule_tests.CASES[name]
  if scheduled:
    tx = factory(schedules.inverse_time_decay(0.05, 0.03))
    hp = {**hp, "lr": rule_tests._inverse_time}
  else:
    tx = factory(0.05)
    hp = {**hp, "lr": 0.05}
  actual = _run_fused(tx, lookahead=name == "nesterov_lookahead",
                      kernel=name not in PURE_BY_CHOICE)
  expected = rule_tests._numpy_reference(name, hp)
  rule_tests._assert_trajectories_equal(actual, expected, tol=1e-12)
  assert not np.allclose(actual[-1][0], expected[0][0])  # it moved


# -------------------------------------------------------------------------- fallbacks and errors


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_bfloat16_leaves_fall_back_to_pure_jax(name):
  """bfloat16 leaves run the pure formula (float32 arithmetic, cast back); float32 leaves of the
  same tree still go to the kernel when it is built. Same bits as the pure rule either way."""
  rng = np.random.default_rng(5)
  tx = RULES[name]()
  shapes = {"dense": (64, 33), "bias": (33,)}
  params = {"bf16": _tree(rng, jnp.bfloat16, shapes=shapes), "f32": _tree(rng, shapes=shapes)}
  grads_fn = lambda _: {"bf16": _tree(rng, jnp.bfloat16, shapes=shapes),
                        "f32": _tree(rng, shapes=shapes)}
  worst, used = _compare_steps(tx, params, tx.init(params), grads_fn, num_steps=4)
  assert worst == 0
  with fused.forced_mode("1"):
    assert used == (fused.available() and name not in PURE_BY_CHOICE)

  only_bf16 = params["bf16"]
  _, text = _compile(_fused_step(tx), "1", only_bf16, tx.init(only_bf16), grads_fn(0)["bf16"])
  assert TARGET not in text
  new_params, _ = fused.update_and_apply(tx, grads_fn(0)["bf16"], tx.init(only_bf16), only_bf16)
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(new_params))


def test_switched_off_is_pure_jax_and_says_so(monkeypatch):
  monkeypatch.setenv(fused.SWITCH, "0")
  assert fused.status() == "pure JAX (TRAINLAB_FUSED=0)"
  assert not fused.available()
  tx = optim.adam(0.01)
  params = _tree(np.random.default_rng(6))
  text = jax.jit(_fused_step(tx)).lower(params, tx.init(params), params).as_text()
  assert TARGET not in text


def test_library_missing_is_pure_jax_and_says_why(monkeypatch):
  """What a machine without a compiler sees: the rules run, status() names the reason."""
  monkeypatch.setattr(fused, "_load", lambda: "libtrainlab_fused.so not built: reinstall")
  monkeypatch.delenv(fused.SWITCH, raising=False)
  assert fused.status() == "pure JAX (libtrainlab_fused.so not built: reinstall)"
  rng = np.random.default_rng(7)
  tx = optim.momentum(0.1)
  params, grads = _tree(rng), _tree(rng)
  state = tx.init(params)
  text = jax.jit(_fused_step(tx)).lower(params, state, grads).as_text()
  assert TARGET not in text
  new_params, _ = jax.jit(_fused_step(tx))(params, state, grads)
  assert _max_ulps(new_params, jax.jit(_pure_step(tx))(params, state, grads)[0]) == 0


@needs_kernel
def test_status_names_the_library():
  assert fused.status() == "fused CPU kernels (libtrainlab_fused.so)"


def test_bad_switch_value_is_one_clear_error(monkeypatch):
  monkeypatch.setenv(fused.SWITCH, "yes")
  with pytest.raises(ValueError, match=r"^TRAINLAB_FUSED='yes': expected 1 .*, 0 .* or delta"):
    fused.status()


@needs_kernel
@pytest.mark.parametrize("name", ["momentum", "nesterov", "adagrad", "rmsprop", "adam"])
def test_delta_mode_keeps_the_optax_contract(name):
  """TRAINLAB_FUSED=delta: the kernel computes the deltas inside tx.update; same bits."""
  rng = np.random.default_rng(8)
  tx = RULES[name]()
  params, grads = _tree(rng), _tree(rng)
  state = tx.init(params)
  kernel_update, text = _compile(tx.update, "delta", grads, state, params)
  pure_update, _ = _compile(tx.update, "0", grads, state, params)
  assert TARGET in text
  assert _max_ulps(kernel_update(grads, state, params), pure_update(grads, state, params)) == 0


def test_any_transformation_works_with_update_and_apply():
  """A transformation that is not a research.optim rule: tx.update then optax.apply_updates."""
  rng = np.random.default_rng(9)
  tx = optax.chain(optax.clip(1.0), optax.adam(1e-2))
  params, grads = _tree(rng), _tree(rng)
  state = tx.init(params)
  got = jax.jit(_fused_step(tx))(params, state, grads)
  assert _max_ulps(got, jax.jit(_pure_step(tx))(params, state, grads)) == 0


@needs_kernel
def test_a_chain_around_a_rule_takes_the_plain_path():
  """Only a research.optim rule (marked ``update.fused_apply``) is asked to apply itself: a user's
  optax.chain, where something may follow the rule, gets tx.update + optax.apply_updates."""
  tx = optax.chain(optim.sgd(0.1), optax.scale(0.5))
  params = _tree(np.random.default_rng(10))
  applied, _ = fused.update_and_apply(tx, params, tx.init(params), params)
  updates, _ = tx.update(params, tx.init(params), params)
  chex.assert_trees_all_equal(applied, optax.apply_updates(params, updates))
  assert getattr(optim.sgd(0.1).update, "fused_apply", False)
  assert not getattr(tx.update, "fused_apply", False)


@needs_kernel
def test_sgd_kernel_equals_the_pure_update_though_training_does_not_use_it():
  """sgd's update stays pure JAX (fused.RULES: XLA's own loop measured faster), but its kernel is
  kept correct: called directly it writes the pure rule's bits, ``p + (-lr) * g`` with the FMA."""
  rng = np.random.default_rng(12)
  params, grads = _tree(rng), _tree(rng)
  neg_lr = jnp.float32(-0.1)
  leaves = [[p, g] for p, g in zip(jax.tree.leaves(params), jax.tree.leaves(grads))
            if jnp.size(p) > 0]
  got = jax.jit(lambda b: fused._kernel_call("sgd", (neg_lr,), b, apply=True))(leaves)
  pure = jax.jit(lambda b: [[p + neg_lr * g] for p, g in b])(leaves)
  assert _max_ulps(got, pure) == 0
  tx = optim.sgd(0.1)
  _, text = _compile(_fused_step(tx), "1", params, tx.init(params), grads)
  assert TARGET not in text


@needs_kernel
def test_status_names_the_path_of_the_configured_rule():
  """The run's start line and summary say the path of ITS rule: sgd and rules without a kernel
  run pure JAX even where the kernels are built."""
  assert fused.status("adam") == fused.status() == "fused CPU kernels (libtrainlab_fused.so)"
  assert fused.status("nesterov_lookahead") == fused.status()
  assert fused.status("sgd") == "pure JAX (sgd: XLA's single loop measured faster than a kernel)"
  assert fused.status("lbfgs") == "pure JAX (lbfgs has no fused kernel)"


def test_the_benchmark_limit_counts_every_word_a_rule_must_move():
  """bench_optim's '% of the in-place limit' scales the 2-word yardstick by the rule's minimal
  traffic: read p, g and the state, write p and the state (it once left out the gradient)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  import pathlib  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(__file__).parents[1] / "scripts" / "bench" / "bench_optim.py"
  spec = importlib.util.spec_from_file_location("bench_optim_under_test", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  assert {name: bench.minimal_words(name) for name in bench.RULES} == {
      "sgd": 3, "momentum": 5, "nesterov": 5, "nesterov_lookahead": 5, "adagrad": 5,
      "rmsprop": 5, "adam": 7, "adam_uncorrected": 7}
