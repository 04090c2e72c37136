"""scripts/gradcheck.py: the per-leaf table, the parts and burn-in, and its exit codes.

Three subprocess runs (each ~5-10 s on the default MLP with 3 coordinates per leaf): the default
config (exit 0), L2 + burn-in (the [data] and [regularization] reports), bad input (exit 1). The
failing-leaf exit 2 and the other bad inputs run ``main`` in-process, with the config flag
replaced by a fixed config (importing the script for real would define the absl flag ``config``,
which other scripts' tests define too).
"""
import ast
import importlib.util
import os
import re
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import launch

from configs import default
from research.checks import model_check
from research.checks.gradcheck import check_gradients

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gradcheck.py")
SMALL = ["--config.gradcheck.coords_per_leaf=3"]
# One table row: leaf, shape, checked, kinks, roundoff, max rel err, median, ..., verdict.
ROW = re.compile(r"^(Dense_\d/(?:bias|kernel))\s+(\([\d, ]*\))\s+(\d+)\s+(\d+)\s+(\d+)\s+"
                 r"(\S+)\s+(\S+)\s+.*\s(\S+)$")


def _expected_shapes() -> dict:
  """The default MLP on digits (8x8 images, 10 classes): Dense_i kernel (in, out), bias (out,)."""
  sizes = [64, *default.get_config().model.hidden_sizes, 10]
  shapes = {}
  for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    shapes[f"Dense_{i}/bias"] = (fan_out,)
    shapes[f"Dense_{i}/kernel"] = (fan_in, fan_out)
  return shapes


def _run(*flags):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True,
                        cwd=ROOT, env=env, timeout=300)


def _reports(stdout: str) -> dict:
  """Report name -> its lines (up to the next report's title)."""
  reports, name = {}, None
  for line in stdout.splitlines():
    title = re.match(r"^Gradient check \[(.+?)\]: ", line)
    if title:
      name = title.group(1)
      reports[name] = []
    if name is not None:
      reports[name].append(line)
  return reports


def _rows(lines) -> dict:
  rows = {}
  for line in lines:
    match = ROW.match(line)
    if match:
      leaf, shape, checked, kinks, roundoff, max_err, median, verdict = match.groups()
      rows[leaf] = {"shape": ast.literal_eval(shape), "checked": int(checked),
                    "kinks": int(kinks), "max_err": float(max_err), "verdict": verdict}
  return rows


def _loss(lines) -> float:
  return float(re.search(r"^loss = (\S+);", lines[1]).group(1))


def test_default_config_prints_every_leaf_and_exits_0():
  out = _run(*SMALL)
  assert out.returncode == 0, out.stderr[-3000:]
  reports = _reports(out.stdout)
  assert list(reports) == ["mlp on digits"]          # no L2 by default: no parts
  lines = reports["mlp on digits"]
  assert "float64 (cast from float32)" in lines[0]
  assert re.match(r"^loss = [\d.]+; \|grad\| = \S+; 6 leaves, 18 coordinates;", lines[1])
  rows = _rows(lines)
  assert {leaf: row["shape"] for leaf, row in rows.items()} == _expected_shapes()
  for leaf, row in rows.items():
    assert row["checked"] == 3, (leaf, row)
    # A ReLU MLP: errors up to 1e-4 are acceptable; the float64 check lands near 1e-8.
    assert row["max_err"] <= 1e-6, (leaf, row)
    assert row["verdict"] in ("good", "acceptable (function has kinks)"), (leaf, row)
  assert lines[-1] == "RESULT [mlp on digits]: OK"


def test_l2_and_burn_in_print_the_parts_apart():
  out = _run(*SMALL, "--config.loss.l2=1e-3", "--config.gradcheck.burn_in_steps=5")
  assert out.returncode == 0, out.stderr[-3000:]
  reports = _reports(out.stdout)
  assert list(reports) == ["mlp on digits", "data", "regularization"]
  for name, lines in reports.items():
    assert set(_rows(lines)) == set(_expected_shapes()), name
    burn_in = [line for line in lines if line.startswith("burn-in: ")]
    assert len(burn_in) == 1, name
    before, after = map(float, re.fullmatch(
        r"burn-in: 5 steps of adam \(lr 0\.001\), loss (\S+) -> (\S+)", burn_in[0]).groups())
    assert after < before
  # The total is the data loss plus the regularization (checked at the burnt-in params).
  total, data, reg = (_loss(reports[name]) for name in ("mlp on digits", "data",
                                                        "regularization"))
  assert total == pytest.approx(data + reg, rel=1e-8)
  # L2 is on the kernels only: the regularization gradient of every bias is exactly zero.
  reg_rows = _rows(reports["regularization"])
  for leaf in ("Dense_0/bias", "Dense_1/bias", "Dense_2/bias"):
    assert reg_rows[leaf]["max_err"] == 0.0
  assert "RESULT [data]: OK" in reports["data"]
  assert "RESULT [regularization]: OK" in reports["regularization"]
  assert out.stdout.splitlines()[-1] == "RESULT [mlp on digits]: OK"


def test_bad_value_exits_1_with_one_line_naming_it():
  out = _run("--config.gradcheck.coords_per_leaf=0")
  assert out.returncode == 1
  assert out.stderr == ("gradcheck.py: error: config.gradcheck.coords_per_leaf must be an integer "
                        ">= 1, got 0\n")
  assert "RESULT" not in out.stdout


# --- main() in-process. ---------------------------------------------------------------------------


def _cli(monkeypatch, config):
  """scripts/gradcheck.py as a module whose ``--config`` flag holds ``config``."""
  from ml_collections import config_flags
  monkeypatch.setattr(config_flags, "DEFINE_config_file",
                      lambda *args, **kwargs: types.SimpleNamespace(value=config))
  spec = importlib.util.spec_from_file_location("gradcheck_cli_under_test", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_failing_leaf_exits_2(monkeypatch, capsys):
  """A real failing report (a bias gradient scaled by 2, written with custom_vjp) -> exit 2."""

  def loss(params, x):
    return jnp.sum(jnp.tanh(x @ params["w"] + params["b"]) ** 2)

  @jax.custom_vjp
  def buggy(params, x):
    return loss(params, x)

  def fwd(params, x):
    value, vjp = jax.vjp(loss, params, x)
    return value, vjp

  def bwd(vjp, g):
    grads, dx = vjp(g)
    return {**grads, "b": 2.0 * grads["b"]}, dx

  buggy.defvjp(fwd, bwd)
  config = default.get_config()
  seen = []

  def check_model_gradients(cfg):
    seen.append(cfg)
    rng = np.random.default_rng(0)
    return check_gradients(buggy, {"w": rng.standard_normal((4, 3)), "b": np.full(3, 0.1)},
                           rng.standard_normal((5, 4)), name="planted")

  monkeypatch.setattr(model_check, "check_model_gradients", check_model_gradients)
  assert _cli(monkeypatch, config).main() == 2
  assert seen == [config]
  out = capsys.readouterr().out
  # The bias leaf fails, and so do the random directions (every direction moves the bias too).
  assert out.splitlines()[-1] == "RESULT [planted]: FAILED (b, direction 0, direction 1)"
  assert "FAIL: probably wrong" in out


@pytest.mark.parametrize("field, value, message", [
    ("bogus", 1, "unknown config.gradcheck field(s) ['bogus']; allowed: ['num_examples', "
                 "'coords_per_leaf', 'burn_in_steps', 'check_regularization_apart', 'h', "),
    ("num_examples", 0, "config.gradcheck.num_examples must be an integer >= 1, got 0"),
    ("burn_in_steps", 2.5, "config.gradcheck.burn_in_steps must be an integer >= 0, got 2.5"),
    ("check_regularization_apart", "yes",
     "config.gradcheck.check_regularization_apart must be True or False, got 'yes'"),
])
def test_bad_config_is_a_user_error(monkeypatch, capsys, field, value, message):
  # Validated before the data set is loaded: cheap. (On the real command line an unknown field
  # like --config.gradcheck.bogus=1 is refused earlier, by research.launch: tests/test_launch.py.)
  config = default.get_config()
  with config.gradcheck.unlocked(), config.gradcheck.ignore_type():   # a config built by hand
    config.gradcheck[field] = value
  with pytest.raises(launch.UserError) as raised:   # launch.run prints it as one line, exit 1
    _cli(monkeypatch, config).main()
  assert str(raised.value).startswith(message), str(raised.value)
  assert capsys.readouterr().out == ""
