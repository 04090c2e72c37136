"""The sanity checks pass on a sound setup and catch deliberately broken ones.

The check functions are exercised with a small local flax MLP and loss (so they are tested apart
from the training stack); the end-to-end tests run ``run_sanity_checks`` on the real
research.models / research.train / research.optim / research.data stack.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits

from research.checks import sanity


class _MLP(nn.Module):
  scale: float = 1.0  # multiplies the logits: > 1 is the "logits scaled up at init" bug

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.relu(nn.Dense(32)(x))
    # A small last layer puts the initial softmax near uniform (loss ~ ln 10).
    return self.scale * nn.Dense(10, kernel_init=nn.initializers.normal(0.01))(x)


def _make_loss(model, l2, sign=1.0):
  def loss_fn(params, batch_stats, x, y, rng, train):
    logits = model.apply({"params": params}, x, train=train)
    data_loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    reg = 0.5 * sum(jnp.sum(w ** 2) for w in jax.tree_util.tree_leaves(params) if w.ndim >= 2)
    total = data_loss + sign * l2 * reg
    return total, {"data_loss": data_loss, "reg_loss": l2 * reg, "logits": logits,
                   "batch_stats": batch_stats}
  return loss_fn


@pytest.fixture(scope="module")
def digits():
  data = load_digits()
  x = ((data.data - data.data.mean(0)) / (data.data.std(0) + 1e-8)).astype(np.float32)
  return jnp.asarray(x[:256]), jnp.asarray(data.target[:256], jnp.int32)


def _params(model, x):
  return model.init(jax.random.key(0), x[:1])["params"]


@pytest.mark.parametrize("scale,passed", [(1.0, True), (300.0, False)])
def test_initial_loss(digits, scale, passed):
  x, y = digits
  model = _MLP(scale=scale)
  result = sanity.check_initial_loss(_make_loss(model, 0.0), _params(model, x), {}, x, y, 10,
                                     0.25, jax.random.key(1))
  assert result.passed is passed
  assert result.figures["expected_ln_C"] == pytest.approx(math.log(10))
  if not passed:
    assert result.figures["initial_loss"] > math.log(10) + 0.25
    assert "logits too large at init" in result.message


@pytest.mark.parametrize("sign,passed", [(1.0, True), (-1.0, False), (0.0, False)])
def test_regularization(digits, sign, passed):
  x, y = digits
  model = _MLP()
  result = sanity.check_regularization(lambda l2: _make_loss(model, l2, sign),
                                       _params(model, x), {}, x, y, (0.0, 0.1, 1.0),
                                       jax.random.key(1))
  assert result.passed is passed
  losses = result.figures["losses"]
  assert len(losses) == 3
  if not passed:
    assert "wrong sign" in result.message


@pytest.mark.parametrize("learning_rate,passed", [(1e-2, True), (0.0, False)])
def test_overfit_subset(digits, learning_rate, passed):
  x, y = digits
  model = _MLP()
  result = sanity.check_overfit_subset(_make_loss(model, 0.0), optax.adam(learning_rate),
                                       _params(model, x), {}, x[:20], y[:20], 200,
                                       jax.random.key(1))
  assert result.passed is passed
  if passed:
    assert result.figures["final_accuracy"] == 1.0
    assert result.figures["steps_to_100_percent"] <= 200
  else:
    assert result.figures["final_loss"] == pytest.approx(result.figures["initial_loss"])
    assert "learning rate 0" in result.message


def test_overfit_budget_is_exact(digits):
  """A budget that is not a multiple of the chunk runs exactly that many updates."""
  x, y = digits
  model = _MLP()
  counter = optax.chain(optax.scale_by_adam(), optax.scale(0.0))
  result = sanity.check_overfit_subset(_make_loss(model, 0.0), counter, _params(model, x), {},
                                       x[:20], y[:20], 13, jax.random.key(1))
  assert result.figures["steps_to_100_percent"] == "> 13"
  assert "after 13 updates" in result.message


def test_report_format_and_lookup():
  report = sanity.SanityReport((
      sanity.CheckResult("initial_loss", True, {"initial_loss": 2.31}, "ok"),
      sanity.CheckResult("overfit_subset", False, {"final_accuracy": 0.5}, "bad")))
  assert not report.passed
  assert report["overfit_subset"].figures == {"final_accuracy": 0.5}
  text = report.format()
  assert "[PASS] initial_loss: ok" in text and "[FAIL] overfit_subset: bad" in text
  assert text.endswith("SANITY CHECKS FAILED: overfit_subset")
  with pytest.raises(KeyError, match="known"):
    report["nope"]


@pytest.mark.parametrize("field,value,match", [
    ("subset", 0, "config.sanity.subset"),
    ("overfit_steps", -5, "config.sanity.overfit_steps"),
    ("chance_tolerance", -1.0, "chance_tolerance"),
    ("l2_values", (1.0, 0.1), "strictly increasing"),
    ("l2_values", (0.1,), "at least 2"),
])
def test_bad_sanity_config(field, value, match):
  from configs import default
  config = default.get_config()
  config.sanity[field] = value
  with pytest.raises(ValueError, match=match):
    sanity.run_sanity_checks(config)
