"""research.data, research.models and the loss: splits, standardization, shapes, init, errors."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from configs import default
from research import data, models, train


@pytest.fixture(scope="module")
def digits():
  return data.load_dataset(default.get_config().data)


def test_digits_split_is_fixed_disjoint_and_complete(digits):
  assert digits.name == "digits" and digits.num_classes == 10
  assert digits.image_shape == (8, 8, 1) and digits.input_shape == (8, 8, 1)
  assert (len(digits.x_train), len(digits.x_val), len(digits.x_test)) == (1257, 270, 270)
  train_idx, val_idx, test_idx = data.split_indices(1797, 0.15, 0.15, seed=0)
  assert len(set(train_idx) | set(val_idx) | set(test_idx)) == 1797
  assert not set(train_idx) & set(val_idx) and not set(val_idx) & set(test_idx)
  again = data.load_dataset(default.get_config().data)
  np.testing.assert_array_equal(again.x_val, digits.x_val)
  assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int32


def test_standardization_uses_training_statistics_only(digits):
  np.testing.assert_allclose(digits.x_train.mean(axis=0), 0.0, atol=1e-5)
  std = digits.x_train.std(axis=0)
  assert np.all((np.abs(std - 1) < 1e-4) | (std == 0))  # constant pixels are only centred
  assert abs(float(digits.x_val.mean())) > 1e-4  # validation statistics were not used
  x_train, x_val = data.standardize(np.array([[0.0], [2.0]]), np.array([[4.0]]))
  np.testing.assert_allclose(x_train[:, 0], [-1.0, 1.0])
  np.testing.assert_allclose(x_val[0, 0], 3.0)


def test_subset_and_mnist1d():
  config = default.get_config()
  config.data.subset = 20
  assert len(data.load_dataset(config.data).x_train) == 20
  config.data.subset = 0
  config.data.name = "mnist1d"
  ds = data.load_dataset(config.data)
  assert ds.input_shape == (40, 1) and ds.image_shape is None and ds.num_classes == 10
  assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 5000


@pytest.mark.parametrize("name, message", [
    ("imagenet", "config.data.name='imagenet' is unknown; choose one of digits, mnist1d, mnist"),
    ("cifar10", "needs tensorflow-datasets"),
])
def test_unavailable_data_sets_fail_clearly(name, message):
  pytest.importorskip("sklearn")
  config = default.get_config()
  config.data.name = name
  if name == "cifar10":
    try:
      import tensorflow_datasets  # noqa: F401
      pytest.skip("tensorflow-datasets is installed here")
    except ImportError:
      pass
  with pytest.raises((ValueError, RuntimeError), match=message):
    data.load_dataset(config.data)


def test_bad_fractions_rejected():
  config = default.get_config()
  config.data.val_fraction = 0.6
  config.data.test_fraction = 0.5
  with pytest.raises(ValueError, match="leaves no training data"):
    data.load_dataset(config.data)


@pytest.mark.parametrize("name, input_shape, image_shape", [
    ("mlp", (8, 8, 1), (8, 8, 1)), ("cnn", (8, 8, 1), (8, 8, 1)), ("cnn1d", (40, 1), None)])
@pytest.mark.parametrize("batch_norm, dropout", [(False, 0.0), (True, 0.5)])
def test_models_shapes_collections_and_modes(name, input_shape, image_shape, batch_norm, dropout):
  config = default.get_config().model
  config.name, config.batch_norm, config.dropout = name, batch_norm, dropout
  model = models.create_model(config, 10, image_shape)
  x = jax.random.normal(jax.random.PRNGKey(1), (4,) + input_shape)
  variables = model.init({"params": jax.random.PRNGKey(0)}, x, train=False)
  assert ("batch_stats" in variables) == batch_norm
  logits, mutated = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)},
                                mutable=["batch_stats", "intermediates"])
  assert logits.shape == (4, 10)
  assert any(k.startswith("act_") for v in mutated["intermediates"].values() for k in v)
  test_a = model.apply(variables, x, train=False)
  test_b = model.apply(variables, x, train=False)
  chex.assert_trees_all_equal(test_a, test_b)  # test mode is deterministic
  if dropout or batch_norm:
    assert not np.allclose(logits, test_a)      # training mode differs


@pytest.mark.parametrize("init, std, output_std", [
    ("he", np.sqrt(2 / 64), 0.1 * np.sqrt(2 / 256)),
    ("xavier", np.sqrt(2 / (64 + 256)), 0.1 * np.sqrt(2 / (256 + 10))),
    ("small", 0.01, 0.001), ("unit", 1.0, 0.1)])
def test_initialization_scales(init, std, output_std):
  config = default.get_config().model
  config.init = init
  params = models.create_model(config, 10, (8, 8, 1)).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))["params"]
  kernel = np.asarray(params["Dense_0"]["kernel"])
  assert kernel.std() == pytest.approx(std, rel=0.05)
  np.testing.assert_array_equal(params["Dense_0"]["bias"], 0.0)
  # The output layer: the same scheme at output_scale = 0.1 (initial loss ~ ln C).
  assert np.asarray(params["Dense_2"]["kernel"]).std() == pytest.approx(output_std, rel=0.1)


@pytest.mark.parametrize("field, value, message", [
    ("name", "resnet", "choose one of mlp, cnn, cnn1d"),
    ("init", "orthogonal", "choose one of xavier, he, small, unit, normal, zeros, "
                           "constant"),
    ("activation", "gelu", "choose one of relu, tanh, sigmoid"),
    ("dropout", -0.1, "must be in [0, 1)"),
    ("hidden_sizes", (0, 5), "must be a tuple of positive integers"),
])
def test_bad_model_config(field, value, message):
  config = default.get_config().model
  config[field] = value
  with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")
                     .replace("(", r"\(")):
    models.create_model(config, 10, (8, 8, 1))


def test_cnn_needs_images():
  config = default.get_config().model
  config.name = "cnn"
  with pytest.raises(ValueError, match="needs image data"):
    models.create_model(config, 10, None)


def test_loss_parts_and_l2_on_weights_only():
  params = {"Dense_0": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.ones(3)},
            "BatchNorm": {"scale": jnp.ones(3), "bias": jnp.ones(3)}}
  assert float(train.l2_penalty(params)) == pytest.approx(0.5 * 6 * 4.0)
  logits = jnp.asarray([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
  labels = jnp.asarray([0, 2])
  expected = np.mean([np.log(np.exp([2.0, 0.0, -1.0]).sum()) - 2.0, np.log(3.0)])
  assert float(train.cross_entropy(logits, labels)) == pytest.approx(expected, rel=1e-6)


def test_loss_gradient_matches_finite_differences():
  """The full objective (data + L2, tanh MLP, float64) against centered differences."""
  config = default.get_config().model
  config.hidden_sizes, config.activation = (5,), "tanh"
  model = models.create_model(config, 3, (4, 1, 1))
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 4, 1, 1), jnp.float64)
  y = jnp.asarray([0, 1, 2, 0, 1, 2])
  params = jax.tree.map(lambda p: p.astype(jnp.float64),
                        model.init(jax.random.PRNGKey(1), x)["params"])
  loss_fn = train.make_loss_fn(model, l2=0.1)
  check_grads(lambda p: loss_fn(p, {}, x, y, jax.random.PRNGKey(0), False)[0], (params,),
              order=1, modes=["rev"], eps=1e-6, atol=1e-7, rtol=1e-7)


def test_without_l2_the_penalty_is_not_in_the_loss_nor_its_gradient():
  """l2 = 0 (the default): the loss is the data loss alone. ``data + 0.0 * penalty`` would turn a
  penalty that overflows (weights ~1e20) into a NaN loss and gradient, and cost the step a pass
  over every weight for a zero gradient; the penalty is still reported in aux."""
  config = default.get_config().model
  config.hidden_sizes = (4,)
  model = models.create_model(config, 3, (4, 1, 1))
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 4, 1, 1))
  y = jnp.asarray([0, 1, 2, 0, 1, 2])
  params = model.init(jax.random.PRNGKey(1), x)["params"]
  params["Dense_1"]["kernel"] = params["Dense_1"]["kernel"].at[0, 0].set(1e20)  # square: inf
  loss_fn = train.make_loss_fn(model, l2=0.0)
  (loss, aux), grads = jax.value_and_grad(
      lambda p: loss_fn(p, {}, x, y, jax.random.PRNGKey(0), False), has_aux=True)(params)
  assert np.isinf(float(aux["reg_loss"]))
  assert float(loss) == float(aux["data_loss"]) and np.isfinite(float(loss))
  data_grads = jax.grad(lambda p: train.cross_entropy(model.apply({"params": p}, x), y))(params)
  chex.assert_trees_all_equal(grads, data_grads)


@pytest.mark.parametrize("init, std, expected_std, expected_mean", [
    ("normal", 0.5, 0.5, 0.0), ("zeros", 0.5, 0.0, 0.0), ("constant", 0.5, 0.0, 0.5)])
def test_init_schemes_of_any_scale_and_the_symmetric_ones(init, std, expected_std, expected_mean):
  """init='normal' draws N(0, init_std^2); 'zeros' and 'constant' are the symmetric starts (every
  unit of a layer the same)."""
  config = default.get_config()
  config.model.init, config.model.init_std = init, std
  kernel = np.asarray(train.init_state(train.build_experiment(config)).params["Dense_0"]["kernel"])
  assert kernel.std() == pytest.approx(expected_std, abs=0.01)
  assert kernel.mean() == pytest.approx(expected_mean, abs=0.01)
  if init != "normal":
    assert np.all(kernel == kernel[0, 0])   # every weight alike: nothing breaks the symmetry
