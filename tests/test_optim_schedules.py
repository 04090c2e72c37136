"""Schedules (formulas, per-epoch stepping in get_optimizer), reduce-on-plateau (both modes,
negative metrics, optax.contrib's handling of negative values) and registry errors."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

from configs import default
from research import optim
from research.optim import schedules

COUNTS = np.arange(0, 40)


@pytest.mark.parametrize("schedule,formula", [
    (schedules.constant(0.3), lambda t: 0.3 + 0 * t),
    (schedules.step_decay(0.1, 0.5, every=10), lambda t: 0.1 * 0.5 ** (t // 10)),
    (schedules.exponential_decay(0.1, 0.05), lambda t: 0.1 * np.exp(-0.05 * t)),
    (schedules.inverse_time_decay(0.1, 0.05), lambda t: 0.1 / (1 + 0.05 * t)),
    (schedules.momentum_warmup(0.5, 0.99, steps=20),
     lambda t: 0.5 + 0.49 * np.minimum(t, 20) / 20),
], ids=["constant", "step", "exponential", "inverse_time", "momentum_warmup"])
def test_schedule_formulas(schedule, formula):
  values = jax.jit(jax.vmap(schedule))(jnp.asarray(COUNTS, jnp.int32))
  np.testing.assert_allclose(values, formula(COUNTS.astype(np.float64)), rtol=1e-13, atol=0)


def test_momentum_warmup_ends_at_end_value():
  schedule = schedules.momentum_warmup(steps=10)
  assert float(schedule(0)) == 0.5
  np.testing.assert_allclose([float(schedule(t)) for t in (10, 11, 1000)], 0.99, rtol=1e-15)


@pytest.mark.parametrize("make,message", [
    (lambda: schedules.step_decay(0.1, 0.0, 10), "factor must be in (0, 1], got 0.0"),
    (lambda: schedules.step_decay(0.1, 1.5, 10), "factor must be in (0, 1], got 1.5"),
    (lambda: schedules.step_decay(0.1, 0.5, 0), "every must be an integer >= 1, got 0"),
    (lambda: schedules.step_decay(-0.1, 0.5, 3), "init_value must be in [0, inf), got -0.1"),
    (lambda: schedules.exponential_decay(0.1, -1.0), "k must be in [0, inf), got -1.0"),
    (lambda: schedules.inverse_time_decay(0.1, -1.0), "k must be in [0, inf), got -1.0"),
    (lambda: schedules.momentum_warmup(0.5, 1.0, 5), "end must be in [0, 1), got 1.0"),
    (lambda: schedules.momentum_warmup(-0.5, 0.9, 5), "start must be in [0, 1), got -0.5"),
    (lambda: schedules.ReduceOnPlateau(factor=0.0), "factor must be in (0, 1], got 0.0"),
    (lambda: schedules.ReduceOnPlateau(factor=2.0), "factor must be in (0, 1], got 2.0"),
    (lambda: schedules.ReduceOnPlateau(patience=0), "patience must be an integer >= 1, got 0"),
    (lambda: schedules.ReduceOnPlateau(min_delta=-1.0), "min_delta must be in [0, inf), got -1.0"),
    (lambda: schedules.ReduceOnPlateau(mode="up"), "unknown plateau mode 'up'; known: max, min"),
])
def test_schedule_errors(make, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    make()


# -------------------------------------------------------------------------------- reduce on plateau


def _scales(plateau, metrics):
  state = plateau.init()
  scales = []
  for metric in metrics:
    state = plateau.update(state, metric)
    scales.append(state.scale)
  return scales


def test_plateau_max_mode_reduces_after_patience_without_improvement():
  plateau = schedules.ReduceOnPlateau(factor=0.5, patience=2, min_delta=0.01, mode="max")
  #              best  bad  bad->x0.5  better  +0.005 (< min_delta: bad)  bad->x0.25
  metrics = [0.50, 0.50, 0.49, 0.60, 0.605, 0.60]
  assert _scales(plateau, metrics) == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_plateau_min_mode_mirrors_max_mode():
  plateau = schedules.ReduceOnPlateau(factor=0.5, patience=2, min_delta=0.01, mode="min")
  metrics = [2.0, 2.0, 2.1, 1.5, 1.495, 1.5]
  assert _scales(plateau, metrics) == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


@pytest.mark.parametrize("mode,sign", [("max", 1.0), ("min", -1.0)])
def test_plateau_handles_negative_metrics_like_positive_ones(mode, sign):
  """Shifting every metric by a constant (here to negative values) changes nothing."""
  plateau = schedules.ReduceOnPlateau(factor=0.5, patience=2, min_delta=1e-3, mode=mode)
  base = sign * np.array([0.1, 0.2, 0.2, 0.2, 0.25, 0.2499, 0.2495, 0.3, 0.3, 0.3])
  assert _scales(plateau, base - 10.0) == _scales(plateau, base) == _scales(plateau, base + 10.0)
  assert _scales(plateau, base)[-1] < 1.0  # the sequence does plateau


def test_plateau_constant_negative_metric_is_a_plateau():
  plateau = schedules.ReduceOnPlateau(factor=0.5, patience=3, min_delta=1e-4, mode="min")
  assert _scales(plateau, [-10.0] * 7) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_optax_contrib_reduce_on_plateau_mishandles_negative_values():
  """optax.contrib counts ``value < (1 - rtol) * best`` as an improvement: for a negative best the
  threshold lies ABOVE best, so a constant (or slowly worsening) negative metric keeps
  "improving" and the learning rate is never reduced; the same sequence shifted positive is
  reduced. Ours reduces both."""
  def optax_scales(values):
    tx = optax.contrib.reduce_on_plateau(factor=0.5, patience=3, rtol=1e-4, atol=0.0)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    scales = []
    for value in values:
      _, state = tx.update(params, state, params, value=jnp.asarray(value))
      scales.append(float(state.scale))
    return scales

  worsening = [-10.0 + 1e-4 * i for i in range(10)]  # negative loss getting slightly WORSE
  assert optax_scales(worsening) == [1.0] * 10                    # never reduced
  assert optax_scales([10.0 + 1e-4 * i for i in range(10)])[-1] < 1.0  # positive: reduced
  ours = schedules.ReduceOnPlateau(factor=0.5, patience=3, min_delta=0.0, mode="min")
  assert _scales(ours, worsening)[-1] < 1.0


def test_plateau_rejects_nan_metric():
  plateau = schedules.ReduceOnPlateau()
  with pytest.raises(ValueError, match="metric must be a number, got nan"):
    plateau.update(plateau.init(), float("nan"))


# --------------------------------------------------------------------- get_optimizer schedules


def _config(**overrides):
  cfg = default.get_config().optimizer
  for dotted, value in overrides.items():
    section = cfg
    *parents, leaf = dotted.split(".")
    for parent in parents:
      section = section[parent]
    section[leaf] = value
  return cfg


def _run_and_record(tx, steps, record):
  params = {"kernel": jnp.ones((2, 2), jnp.float32), "bias": jnp.ones(2, jnp.float32)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  values = []
  for _ in range(steps):
    grads = jax.tree.map(jnp.ones_like, params)
    deltas, state = update(grads, state, params)
    params = optax.apply_updates(params, deltas)
    values.append(record(state))
  assert update._cache_size() == 1
  return np.array(values), state


@pytest.mark.parametrize("name,formula", [
    ("constant", lambda epoch: 0.1 + 0 * epoch),
    ("step", lambda epoch: 0.1 * 0.5 ** (epoch // 2)),
    ("exponential", lambda epoch: 0.1 * np.exp(-0.3 * epoch)),
    ("inverse_time", lambda epoch: 0.1 / (1 + 0.3 * epoch)),
    ("plateau", lambda epoch: 0.1 + 0 * epoch),
])
def test_learning_rate_schedule_steps_per_epoch(name, formula):
  steps_per_epoch = 3
  cfg = _config(name="sgd", learning_rate=0.1, **{"schedule.name": name, "schedule.every": 2,
                                                   "schedule.k": 0.3, "schedule.factor": 0.5})
  tx = optim.get_optimizer(cfg, steps_per_epoch)
  rates, _ = _run_and_record(tx, 12, optim.get_learning_rate)
  epochs = np.arange(12) // steps_per_epoch
  np.testing.assert_allclose(rates, formula(epochs), rtol=1e-6)


def test_plateau_scale_multiplies_the_scheduled_learning_rate_without_recompiling():
  cfg = _config(name="adam", learning_rate=0.1,
                **{"schedule.name": "exponential", "schedule.k": 0.5})
  tx = optim.get_optimizer(cfg, steps_per_epoch=2)
  params = {"w": jnp.ones((3, 3), jnp.float32)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  rates = []
  for step in range(8):
    if step == 4:
      state = optim.scale_learning_rate(state, 0.25)
    _, state = update(params, state, params)
    rates.append(float(optim.get_learning_rate(state)))
  epochs = np.arange(8) // 2
  expected = 0.1 * np.exp(-0.5 * epochs) * np.where(np.arange(8) >= 4, 0.25, 1.0)
  np.testing.assert_allclose(rates, expected, rtol=1e-6)
  assert update._cache_size() == 1
  # Absolute, not cumulative: applying the same plateau scale again changes nothing.
  again = optim.scale_learning_rate(state, 0.25)
  assert float(optim.get_learning_rate(again)) == float(optim.get_learning_rate(state))


def test_get_plateau_follows_config():
  assert optim.get_plateau(_config()) is None
  plateau = optim.get_plateau(_config(**{"schedule.name": "plateau", "schedule.patience": 5,
                                         "schedule.mode": "min"}))
  assert (plateau.patience, plateau.mode, plateau.factor) == (5, "min", 0.5)


@pytest.mark.parametrize("name", ["momentum", "nesterov", "nesterov_lookahead"])
def test_momentum_schedule_steps_per_epoch(name):
  cfg = _config(name=name, **{"momentum_schedule.enabled": True, "momentum_schedule.epochs": 4})
  tx = optim.get_optimizer(cfg, steps_per_epoch=2)
  mus, _ = _run_and_record(tx, 12, lambda s: float(optim.get_hyperparams(s)["mu"]))
  epochs = np.arange(12) // 2
  np.testing.assert_allclose(mus, 0.5 + 0.49 * np.minimum(epochs, 4) / 4, rtol=1e-6)


def test_weight_decay_from_config_decays_kernels_only():
  cfg = _config(name="sgd", learning_rate=0.1, weight_decay=0.5)
  tx = optim.get_optimizer(cfg, steps_per_epoch=1)
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
  deltas, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(deltas["kernel"], -0.1 * 0.5)
  np.testing.assert_allclose(deltas["bias"], 0.0)


@pytest.mark.parametrize("overrides,message", [
    ({"name": "adamw"}, "unknown optimizer 'adamw'; known: sgd, momentum, nesterov, "
                        "nesterov_lookahead, adagrad, rmsprop, adam"),
    ({"schedule.name": "cosine"}, "unknown learning-rate schedule 'cosine'; known: constant, step, "
                                  "exponential, inverse_time, plateau"),
    ({"learning_rate": -1.0}, "learning_rate must be in [0, inf), got -1.0"),
    ({"weight_decay": -1.0}, "weight_decay must be in [0, inf), got -1.0"),
    ({"name": "momentum", "mu": 1.0}, "mu must be in [0, 1), got 1.0"),
    ({"name": "adam", "beta2": 1.0}, "beta2 must be in [0, 1), got 1.0"),
    ({"name": "rmsprop", "decay_rate": -0.1}, "decay_rate must be in [0, 1), got -0.1"),
    ({"name": "adagrad", "eps": 0.0}, "eps must be in (0, inf), got 0.0"),
    ({"schedule.name": "step", "schedule.factor": 0.0}, "factor must be in (0, 1], got 0.0"),
    ({"schedule.name": "plateau", "schedule.patience": 0},
     "patience must be an integer >= 1, got 0"),
    ({"momentum_schedule.enabled": True}, "momentum_schedule.enabled applies to momentum, "
                                          "nesterov, nesterov_lookahead; optimizer is 'adam'"),
])
def test_get_optimizer_errors(overrides, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    optim.get_optimizer(_config(**overrides), steps_per_epoch=10)


def test_get_optimizer_rejects_bad_steps_per_epoch():
  with pytest.raises(ValueError, match=re.escape("steps_per_epoch must be an integer >= 1, got 0")):
    optim.get_optimizer(_config(), steps_per_epoch=0)
