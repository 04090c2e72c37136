"""The K-seed vmapped runner on the real training stack equals K runs of train_and_evaluate."""
import chex
import jax
import numpy as np

from research import data, train
from research.ensemble import seeds as seeds_lib
from tests.train_helpers import small_config


def test_vmapped_seeds_equal_separate_training_runs(tmp_path):
  config = small_config(epochs=2)
  config.model.dropout = 0.1                 # seed-dependent dropout masks
  config.averaging.ema_decay = 0.9
  config.averaging.polyak_start_epoch = 1
  config.monitor.enabled = False             # the loop's monitored steps are another program
  config.monitor.figures = False
  config.checkpoint.enabled = False
  dataset = data.load_dataset(config.data)
  seeds = [3, 4]
  stacked = seeds_lib.train_seeds(config, seeds, dataset=dataset)
  for k, seed in enumerate(seeds):
    single_config = config.copy_and_resolve_references()
    single_config.seed = seed
    single = train.train_and_evaluate(single_config, str(tmp_path / f"seed{seed}"),
                                      dataset=dataset, log=None)
    member = jax.tree.map(lambda a, k=k: a[k], jax.device_get(stacked.state))
    chex.assert_trees_all_close(member.params, jax.device_get(single.state.params),
                                rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(member.averages.ema, jax.device_get(single.state.averages.ema),
                                rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stacked.history[k][-1]["val_accuracy"],
                               single.history[-1]["val_accuracy"], atol=1e-6)
