"""research.train.full_batch (scripts/second_order.py): the full-batch comparison of rules
writes readable figures and exact counts."""
import json

import matplotlib.image
import numpy as np
import pytest

from configs import second_order_mlp, second_order_softmax
from research.train import full_batch as driver


def test_driver_writes_figures_and_counts_newton_work_exactly(tmp_path):
  config = second_order_softmax.get_config()
  config.second_order.methods = "adam,newton"
  config.second_order.adam.max_steps = 5
  config.second_order.newton.max_steps = 2
  report = driver.compare_rules(config, str(tmp_path), log=None)

  for name in ("loss_vs_time.png", "loss_vs_evaluations.png"):
    image = matplotlib.image.imread(tmp_path / name)
    assert image.shape[0] > 400 and image.shape[1] > 400
  on_disk = json.loads((tmp_path / "second_order.json").read_text())
  assert on_disk["num_params"] == 650 == report["num_params"]  # 64 * 10 + 10
  adam, newton = on_disk["methods"]["adam"], on_disk["methods"]["newton"]
  assert adam["evaluations"] == [0, 1, 2, 3, 4, 5]
  assert len(adam["loss"]) == len(adam["time_s"]) == 6
  # Newton: one caller evaluation at the start (then the stored trial point is reused); per step
  # a 650 x 650 Hessian = 650 products (cost 2 each) and one trial value + gradient.
  assert newton["counts"] == {"value_and_grad_calls": 1 + 2, "value_calls": 0, "hvp_calls": 1300}
  assert newton["evaluations"] == [0, 1 + 1300 + 1, 1 + 2 * (1300 + 1)]
  assert newton["loss"][-1] < newton["loss"][0]
  assert np.all(np.diff(newton["time_s"]) > 0)


def test_configs_name_known_methods():
  for module in (second_order_softmax, second_order_mlp):
    config = module.get_config()
    for name in driver.parse_methods(config.second_order.methods):
      assert "max_steps" in config.second_order[name]


def test_unknown_method_is_rejected():
  with pytest.raises(ValueError, match=r"unknown or no methods \['bfgs'\]; known: nesterov, adam"):
    driver.parse_methods("lbfgs,bfgs")
