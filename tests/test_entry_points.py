"""Every user mistake at an entry point is one line, exit status 1, no traceback, nothing written;
and the command-line habits every script shares (help, --print_config, saved configs, logging).

The search scripts' bad inputs are in tests/test_search_bad_inputs.py, the ablation's in
tests/test_ablate_grid.py, the ensemble study's in tests/test_ensemble_study.py.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_EXAMPLES = 1257

# (script, arguments, the exact error line after "<script>: error: ")
BAD_INPUTS = [
    ("train.py", ["--config.optimizer.learning_rate=inf"],
     "config.optimizer: learning_rate must be in [0, inf), got inf"),
    ("train.py", ["--config.optimizer.learning_rate=-1"],
     "config.optimizer: learning_rate must be in [0, inf), got -1.0"),
    ("train.py", ["--config.optimizer.eps=inf"],
     "config.optimizer: eps must be in (0, inf), got inf"),
    ("train.py", ["--config.optimizer.beta1=1.0"],
     "config.optimizer: beta1 must be in [0, 1), got 1.0"),
    ("train.py", ["--config.optimizer.name=adamw"],
     "config.optimizer: unknown optimizer 'adamw'; known: sgd, momentum, nesterov, "
     "nesterov_lookahead, adagrad, rmsprop, adam"),
    ("train.py", ["--config.loss.l2=nan"], "config.loss.l2=nan must be a finite number >= 0."),
    ("train.py", ["--config.train.divergence_factor=nan"],
     "config.train.divergence_factor=nan must be a finite number > 1."),
    ("train.py", ["--config.train.num_epochs=0"],
     "config.train.num_epochs=0 must be an integer >= 1."),
    ("train.py", ["--config.train.batch_size=5000"],
     f"config.train.batch_size=5000 is larger than the {DIGITS_EXAMPLES} training examples."),
    ("train.py", ["--config.train.num_epochs=x"],
     "flag --config.train.num_epochs=x: invalid literal for int() with base 10: 'x'; see --help"),
    ("train.py", ["--config.model.init=bogus"],
     "config.model.init='bogus' is unknown; choose one of xavier, he, small, unit, normal, "
     "zeros, constant."),
    ("train.py", ["--config.averaging.export=ema"],
     "config.averaging.export='ema' but that average is off (ema_decay=0.0, "
     "polyak_start_epoch=-1); turn it on or export 'raw'."),
    ("train.py", ["--config.data.name=mnist"],
     "config.data.name='mnist' needs tensorflow-datasets, which is not installed; prepare it on a "
     "machine with network access with `pip install tensorflow-datasets tensorflow && python -c "
     "\"import tensorflow_datasets as tfds; tfds.load('mnist')\"` and copy ~/tensorflow_datasets "
     "here (or set config.data.data_dir). The embedded data sets are 'digits' and 'mnist1d'."),
    ("train.py", ["extra"],
     "unexpected argument(s) 'extra': this script takes only --flags (see --help)"),
    ("train.py", ["--bogus"], "Unknown command line flag 'bogus'; see --help"),
    ("train.py", ["--config=/nonexistent.py"],
     "config file '/nonexistent.py' does not exist; pass a configs/*.py file or a run's "
     "config.json"),
    ("train.py", ["--config.optimizer.nam=adam"],
     "unknown config field 'optimizer.nam' in --config.optimizer.nam=adam; config.optimizer has: "
     "beta1, beta2, bias_correction, decay_rate, eps, learning_rate, momentum_schedule, mu, name, "
     "schedule, weight_decay"),
    ("sanity.py", ["--config.sanity.subset=0"], "config.sanity.subset must be an integer >= 1, "
                                                "got 0"),
    ("gradcheck.py", ["--config.gradcheck.num_examples=0"],
     "config.gradcheck.num_examples must be an integer >= 1, got 0"),
    ("train.py", ["--config.optimizer.name=momentum",
                  "--config.optimizer.momentum_schedule.enabled=True",
                  "--config.optimizer.momentum_schedule.epochs=0"],
     "config.optimizer: momentum_schedule.epochs must be an integer >= 1, got 0"),
    ("second_order.py", ["--config.second_order.methods=bfgs"],
     "config.second_order.methods='bfgs' has unknown or no methods ['bfgs']; known: nesterov, "
     "adam, lbfgs, hessian_free, newton"),
]


def _run(script, *arguments, cwd=None, env=None, timeout=300):
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script), *arguments],
                        capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT,
                        env={**os.environ, **(env or {})})


@pytest.mark.parametrize("script, arguments, message", BAD_INPUTS,
                         ids=[f"{s}:{' '.join(a)}"[:60] for s, a, _ in BAD_INPUTS])
def test_a_bad_input_is_one_line_exit_1_and_writes_nothing(tmp_path, script, arguments, message):
  workdir = tmp_path / "w"
  extra = [f"--workdir={workdir}"] if script in ("train.py", "second_order.py") else []
  result = _run(script, *extra, *arguments, cwd=tmp_path)
  assert result.returncode == 1, result.stdout + result.stderr
  assert result.stderr == f"{script}: error: {message}\n"
  assert os.listdir(tmp_path) == []   # nothing written, not even the workdir or runs/


def test_help_names_the_config_and_how_to_list_its_fields():
  result = _run("train.py", "--help")
  assert result.returncode == 0
  assert "--config: Experiment config. A get_config() python file or a run's saved" in result.stdout
  assert "--[no]print_config" in result.stdout and "--verbosity" in result.stdout


def test_print_config_prints_the_resolved_config_and_runs_nothing(tmp_path):
  result = _run("train.py", "--print_config", "--config.optimizer.learning_rate=0.003",
                f"--workdir={tmp_path / 'w'}")
  assert result.returncode == 0
  assert "learning_rate: 0.003" in result.stdout and result.stderr == ""
  assert not (tmp_path / "w").exists()


def test_a_run_relaunched_from_its_saved_config_and_quiet_logs(tmp_path):
  workdir = tmp_path / "run"
  first = _run("train.py", f"--workdir={workdir}", "--config.train.num_epochs=1",
               "--config.data.subset=256", "--noconfig.monitor.figures",
               "--config.optimizer.learning_rate=0.003")
  assert first.returncode == 0, first.stderr[-2000:]
  # absl WARNING by default: no orbax INFO lines, no "Unable to initialize backend" lines.
  assert first.stderr == ""
  saved = workdir / "config.json"
  # Resumed (and trained for longer) from its own saved config: the overrides are in it.
  again = _run("train.py", f"--config={saved}", f"--workdir={workdir}",
               "--config.train.num_epochs=2", "--config.model.hidden_sizes=(256, 256)")
  assert again.returncode == 0, again.stderr[-2000:]
  assert f"resumed from {workdir}/checkpoints/1 (epoch 1 of 2 done)" in again.stdout
  summary = json.load(open(workdir / "summary.json"))
  assert summary["epochs"] == 2 and summary["config"]["optimizer"]["learning_rate"] == 0.003
  # A different experiment in the same workdir: refused, naming every differing field.
  other = _run("train.py", f"--config={saved}", f"--workdir={workdir}",
               "--config.optimizer.learning_rate=0.1", "--config.model.init=xavier")
  assert other.returncode == 1
  assert other.stderr.startswith(
      f"train.py: error: {workdir} holds a run with a different config (2 fields differ: "
      "model.init: \"he\" (saved) vs \"xavier\" (now); optimizer.learning_rate: 0.003 (saved) "
      "vs 0.1 (now))")
