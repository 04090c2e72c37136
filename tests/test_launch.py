"""The --config flag of the entry points: a misspelt override exits with the script's bad-config
status and names the fields that exist."""
import os
import subprocess
import sys

import pytest

from research.launch import check_overrides, unknown_override

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = os.path.join(ROOT, "configs", "default.py")


def test_known_overrides_pass():
  assert check_overrides(["--config.loss.l2=1e-3", "--config.optimizer.name=adam",
                          "--noconfig.monitor.figures", "--workdir=/tmp/x"], DEFAULT) == []


def test_unknown_field_names_the_override_and_the_fields_that_exist():
  (message,) = check_overrides(["--config.gradcheck.bogus=1"], DEFAULT)
  assert message == ("unknown config field 'gradcheck.bogus' in --config.gradcheck.bogus=1; "
                     "config.gradcheck has: burn_in_steps, check_regularization_apart, "
                     "coords_per_leaf, num_examples")


def test_unknown_group_and_a_value_used_as_a_group():
  import ml_collections
  config = ml_collections.ConfigDict({"model": {"hidden_sizes": (4,)}, "seed": 0})
  assert unknown_override(config, "modle.depth") == (
      "unknown config field 'modle.depth'; config has: model, seed")
  assert unknown_override(config, "seed.x") == (
      "config field 'config.seed' is a value, not a group: 'seed.x' cannot be set")
  assert unknown_override(config, "model.hidden_sizes") is None
  assert unknown_override(config, "seed.x", "--config.seed.x=1") == (
      "config field 'config.seed' is a value, not a group: 'seed.x' in --config.seed.x=1 "
      "cannot be set")


def test_the_config_file_named_on_the_command_line_is_the_one_checked():
  other = os.path.join(ROOT, "configs", "search_digits.py")
  assert check_overrides([f"--config={other}", "--config.search.top_k=2"], DEFAULT) == []
  assert check_overrides(["--config.search.top_k=2"], DEFAULT)  # default.py has no search


@pytest.mark.parametrize("script", ["train.py", "gradcheck.py", "sanity.py"])
def test_entry_point_exits_1_with_one_line_naming_the_override(script):
  result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script),
                           "--config.optimizer.nam=adam"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
  assert result.returncode == 1
  assert result.stderr.startswith(
      f"{script}: error: unknown config field 'optimizer.nam' in --config.optimizer.nam=adam; "
      "config.optimizer has: ")
  assert len(result.stderr.strip().splitlines()) == 1
