"""run_sanity_checks on the real stack (research.models / train / optim / data), and the script.

Each deliberately broken setup is caught by the check meant for it: logits scaled up at init
(init='unit', std 1 weights), a regularization term with the wrong sign (make_loss_fn override),
a learning rate of 0.
"""
import os
import subprocess
import sys

import pytest

from configs import default
from research.checks import sanity

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dataset():
  from research import data
  return data.load_dataset(default.get_config().data)


def _passed(report):
  return {check.name: check.passed for check in report.checks}


def test_default_config_passes(dataset):
  report = sanity.run_sanity_checks(default.get_config(), dataset=dataset)
  assert _passed(report) == {"initial_loss": True, "regularization": True,
                             "overfit_subset": True}, report.format()
  assert report.passed
  assert abs(report["initial_loss"].figures["initial_loss"] - 2.302585) <= 0.25
  assert report["overfit_subset"].figures["final_accuracy"] == 1.0


def test_logits_scaled_up_at_init_fail_initial_loss(dataset):
  config = default.get_config()
  config.model.init = "unit"
  report = sanity.run_sanity_checks(config, dataset=dataset)
  assert not report["initial_loss"].passed
  assert report["initial_loss"].figures["initial_loss"] > 2.302585 + 0.25
  assert "logits too large at init" in report["initial_loss"].message
  assert not report.passed


def test_wrong_sign_regularization_fails(dataset):
  from research import train
  broken = lambda model, l2: train.make_loss_fn(model, -l2)
  report = sanity.run_sanity_checks(default.get_config(), dataset=dataset, make_loss_fn=broken)
  assert _passed(report)["regularization"] is False
  assert _passed(report)["initial_loss"] is True  # l2 = 0 there: the bug is invisible to it
  losses = report["regularization"].figures["losses"]
  assert losses[-1] < losses[0]


def test_zero_learning_rate_fails_overfit(dataset):
  config = default.get_config()
  config.optimizer.learning_rate = 0.0
  report = sanity.run_sanity_checks(config, dataset=dataset)
  assert _passed(report) == {"initial_loss": True, "regularization": True,
                             "overfit_subset": False}
  assert "learning rate 0" in report["overfit_subset"].message


def test_script_exit_status_and_output():
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "sanity.py"),
       "--config.optimizer.learning_rate=0.0"],
      capture_output=True, text=True, timeout=300, cwd="/")
  assert result.returncode == 2, result.stdout + result.stderr   # 2: a check failed
  assert "[PASS] initial_loss" in result.stdout
  assert "[FAIL] overfit_subset" in result.stdout
  assert "expected_ln_C" in result.stdout
