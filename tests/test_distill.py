"""research.ensemble.distill: the distillation loss's temperature handling and the student loop."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.ensemble import distill


def _logits(seed, b=5, c=4):
  z = np.random.default_rng(seed).normal(size=(b, c))
  return jnp.asarray(z - z.mean(-1, keepdims=True))  # zero-mean rows (the high-T argument)


def _soft_grad(z_student, z_teacher, temperature):
  p = jax.nn.softmax(z_teacher / temperature)
  labels = jnp.zeros(z_student.shape[0], jnp.int32)
  return jax.grad(lambda z: distill.distillation_loss(z, p, labels, temperature, 1.0)[0])(
      z_student)


def test_soft_gradient_is_t_times_probability_difference():
  # d/dz [T^2 KL(p || softmax(z/T))] = T (softmax(z/T) - p), averaged over the batch.
  zs, zt = _logits(0), _logits(1)
  for t in (1.0, 2.0, 7.0):
    expected = t * (jax.nn.softmax(zs / t) - jax.nn.softmax(zt / t)) / zs.shape[0]
    np.testing.assert_allclose(_soft_grad(zs, zt, t), expected, rtol=1e-10, atol=1e-14)


def test_t_squared_keeps_soft_gradient_magnitude_independent_of_temperature():
  # Hinton et al. 2015, Sec. 2.1: at high T the soft gradient tends to (z - v) / (C T^2) per
  # example; the T^2 factor makes it tend to (z - v) / C, the same at every T.
  zs, zt = _logits(2), _logits(3)
  b, c = zs.shape
  limit = (zs - zt) / (c * b)
  norms = {}
  for t in (10.0, 30.0, 100.0):
    g = _soft_grad(zs, zt, t)
    norms[t] = float(jnp.linalg.norm(g))
    # The relative distance to the limit shrinks like 1/T (about 0.8 / T for these logits).
    assert float(jnp.linalg.norm(g - limit) / jnp.linalg.norm(limit)) < 1.0 / t
  assert max(norms.values()) / min(norms.values()) < 1.05
  # Without the factor (divide it back out) the magnitude would fall as 1/T^2.
  unscaled = {t: n / t ** 2 for t, n in norms.items()}
  np.testing.assert_allclose(unscaled[10.0] / unscaled[100.0], 100.0, rtol=0.05)


def test_loss_value_mixes_soft_kl_and_hard_cross_entropy():
  zs, zt = _logits(4), _logits(5)
  labels = jnp.asarray([0, 1, 2, 3, 0])
  t, alpha = 3.0, 0.3
  p = jax.nn.softmax(zt / t)
  loss, aux = distill.distillation_loss(zs, p, labels, t, alpha)
  q = jax.nn.softmax(zs / t)
  kl = np.mean(np.sum(p * (np.log(p) - np.log(q)), -1))
  ce = np.mean(-np.log(jax.nn.softmax(zs)[np.arange(5), labels]))
  np.testing.assert_allclose(aux["soft_loss"], kl, rtol=1e-10)
  np.testing.assert_allclose(aux["hard_loss"], ce, rtol=1e-10)
  np.testing.assert_allclose(loss, alpha * t ** 2 * kl + (1 - alpha) * ce, rtol=1e-10)
  # KL is zero when the student matches the teacher.
  _, aux = distill.distillation_loss(zt, p, labels, t, alpha)
  np.testing.assert_allclose(aux["soft_loss"], 0.0, atol=1e-12)


def test_alpha_zero_is_plain_cross_entropy_gradient():
  zs = _logits(6)
  labels = jnp.asarray([1, 0, 3, 2, 1])
  g = jax.grad(lambda z: distill.distillation_loss(z, jnp.full_like(z, 0.25), labels, 4.0,
                                                   0.0)[0])(zs)
  expected = (jax.nn.softmax(zs) - jax.nn.one_hot(labels, 4)) / 5
  np.testing.assert_allclose(g, expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0, alpha=0.5), "temperature=0.0 must be > 0"),
    (dict(temperature=2.0, alpha=1.5), r"alpha=1.5 must be in \[0, 1\]"),
])
def test_bad_arguments(kwargs, match):
  z = _logits(0)
  with pytest.raises(ValueError, match=match):
    distill.distillation_loss(z, jax.nn.softmax(z), jnp.zeros(5, jnp.int32), **kwargs)


def test_gain_kept():
  assert distill.gain_kept(student=0.95, single=0.90, ensemble=1.00) == pytest.approx(0.5)
  assert np.isnan(distill.gain_kept(0.9, 0.9, 0.9))


class _Net(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool = False):
    return nn.Dense(3)(nn.relu(nn.Dense(16)(x)))


def test_student_learns_teacher_soft_targets():
  # Teacher: a fixed linear rule; the student fits its soft targets (alpha = 1) on train data.
  rng = np.random.default_rng(0)
  x = rng.normal(size=(240, 4)).astype(np.float32)
  w = rng.normal(size=(4, 3))
  teacher_logits = x @ w
  y = np.argmax(teacher_logits, -1).astype(np.int32)
  t = 2.0
  probs = np.asarray(jax.nn.softmax(teacher_logits / t))
  model = _Net()
  variables = model.init(jax.random.PRNGKey(0), x[:1])
  result = distill.train_student(model, optax.adam(1e-2), variables, x[:200], y[:200],
                                 probs[:200], x[200:], y[200:], temperature=t, alpha=1.0,
                                 num_epochs=15, batch_size=20)
  assert result.best_val_accuracy >= 0.85
  assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
  # The caller's variables were not donated away.
  assert np.isfinite(np.asarray(variables["params"]["Dense_0"]["kernel"])).all()
