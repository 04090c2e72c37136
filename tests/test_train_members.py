"""research.train.members: K members in one program equal K single runs, in both epoch modes."""
import os

import chex
import jax
import numpy as np
import pytest

from research import data, optim, train
from research.train import members
from tests.train_helpers import small_config


def _config(epochs=2, **changes):
  config = small_config(epochs=epochs)
  config.data.subset = 256
  config.monitor.enabled = False             # the loop's monitored steps are another program
  config.monitor.figures = False
  config.checkpoint.enabled = False
  for path, value in changes.items():
    group, field = path.split("__")
    config[group][field] = value
  return config


def test_select_keeps_each_members_best():
  new = {"w": np.arange(6.0).reshape(3, 2)}
  old = {"w": -np.ones((3, 2))}
  out = members.select(np.asarray([True, False, True]), new, old)
  np.testing.assert_array_equal(out["w"], [[0, 1], [-1, -1], [4, 5]])


def test_members_differing_in_init_scheme_equal_single_runs(tmp_path):
  """Initialization-only fields (model.init, output_scale) and the seed may differ per member."""
  dataset = data.load_dataset(_config().data)
  configs = [_config(model__init="he"), _config(model__init="xavier", model__output_scale=1.0)]
  configs[1].seed = 7
  result = members.train_members(configs, dataset=dataset)
  for k, config in enumerate(configs):
    single = train.train_and_evaluate(config, str(tmp_path / f"m{k}"), dataset=dataset, log=None)
    chex.assert_trees_all_close(members.unstack(jax.device_get(result.state.params), k),
                                jax.device_get(single.state.params), rtol=1e-5, atol=1e-6)
    assert result.history[k][-1]["val_accuracy"] == pytest.approx(
        single.history[-1]["val_accuracy"], abs=1e-6)


def test_every_epoch_mode_trains_the_same_members():
  dataset = data.load_dataset(_config().data)
  configs = [_config(optimizer__learning_rate=lr) for lr in (1e-2, 3e-3)]
  scanned = members.train_members(configs, dataset=dataset, epoch_mode="scan")
  for mode in ("loop", "each"):
    other = members.train_members(configs, dataset=dataset, epoch_mode=mode)
    chex.assert_trees_all_close(jax.device_get(scanned.state.params),
                                jax.device_get(other.state.params), rtol=1e-5, atol=1e-6)
    assert other.history[1][-1]["val_loss"] == pytest.approx(
        scanned.history[1][-1]["val_loss"], rel=1e-5)
  assert members.choose_epoch_mode(_config(model__name="cnn")) == "each"
  assert members.choose_epoch_mode(_config()) == "scan"
  with pytest.raises(ValueError,
                     match=r"epoch_mode='fast' is unknown; known: auto, scan, loop, each"):
    members.choose_epoch_mode(_config(), "fast")


def test_a_weight_decay_only_some_members_have_is_kept_per_member():
  """The rule chains weight decay only when non-zero: members with and without it share one."""
  configs = [_config(epochs=1, optimizer__weight_decay=0.0),
             _config(epochs=1, optimizer__weight_decay=1e-2)]
  result = members.train_members(configs)
  decays = jax.vmap(lambda s: optim.get_hyperparams(s)["weight_decay"])(
      result.state.opt_state)
  np.testing.assert_allclose(decays, [0.0, 1e-2])


def test_members_may_not_differ_in_shapes_or_data():
  a, b = _config(), _config(model__hidden_sizes=(64,))
  with pytest.raises(ValueError, match=r"member 1 differs from member 0 in 'model.hidden_sizes' "
                                       r"\(\(64,\) vs \(32,\)\)"):
    members.train_members([a, b])
  with pytest.raises(ValueError, match="train at least one member"):
    members.train_members([])


def test_a_member_trained_with_l2_as_weight_decay_is_restored_with_its_own_config(tmp_path):
  """Members with different loss.l2 train it as weight decay (an extra transform in the shared
  optimizer state); each member's saved config has its l2, not that state, so restoring its best
  checkpoint for evaluation (ensembles of top-k runs) reads the model and ignores the rest."""
  dataset = data.load_dataset(_config().data)
  configs = [_config(loss__l2=0.0), _config(loss__l2=1e-3)]
  for config in configs:
    config.checkpoint.enabled = True
  workdirs = [str(tmp_path / f"m{k}") for k in range(2)]
  for workdir in workdirs:
    os.makedirs(workdir)
  result = members.train_members(configs, workdirs, dataset=dataset)
  for k, (config, workdir) in enumerate(zip(configs, workdirs)):
    restored = train.checkpoints.restore_best(workdir, config=config, dataset=dataset)
    assert restored["epoch"] == result.best_epoch[k]
    best = jax.tree.map(lambda leaf, k=k: leaf[k], result.best_variables["params"])
    chex.assert_trees_all_equal(restored["params"], best)
