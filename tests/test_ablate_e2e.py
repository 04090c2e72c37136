"""scripts/ablate.py and scripts/compare.py as a user runs them: a 2x2 grid x 2 seeds, SIGKILLed
mid-ablation and re-launched; compare's table, CSV, JSON and figure; one-line errors."""
import csv
import glob
import json
import os
import subprocess
import sys

import pytest

from research.ablate import compare
from tests.train_helpers import REPO

GRID = ["--grid=optimizer.learning_rate=1e-2,3e-3", "--grid=model.hidden_sizes=(16,),(24,)"]
SMALL = ["--config.train.num_epochs=2", "--config.data.subset=256",
         "--config.monitor.every_steps=7", "--config.monitor.figures=False"]


def _script(name, *args, cache=None):
  # The members trainer compiles each member's initialization on its own (the same program K
  # times) and a re-launch compiles everything again: a persistent compilation cache of the
  # test's own makes the repeats cheap and changes no number (the same executable is loaded
  # instead of rebuilt). TRAINLAB_COMPILATION_CACHE is research.launch's setting, the JAX_*
  # variables JAX's own.
  env = dict(os.environ, TRAINLAB_COMPILATION_CACHE=str(cache) if cache else "off")
  if cache:
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", name), *args],
                        capture_output=True, text=True, timeout=600, cwd="/", env=env)


def _epoch_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def test_ablation_is_resumed_after_a_kill_and_compared(tmp_path):
  root = str(tmp_path / "lr_hidden")
  args = [f"--workdir={root}", *GRID, "--seeds=2", *SMALL]
  # Two programs of 4 members (the hidden size changes shapes); killed in the second's epoch 2.
  cache = tmp_path / "xla_cache"
  killed = _script("ablate.py", *args, "--kill_after_epochs=3", cache=cache)
  assert killed.returncode == -9, killed.stderr[-3000:]
  assert "[1/2] 4 vmapped members of one program:" in killed.stdout
  names = sorted(os.listdir(root))
  assert len(names) == 9 and "ablation.json" in names
  first = [n for n in names if "hidden_sizes=16," in n]
  second = [n for n in names if "hidden_sizes=24," in n]
  assert all(os.path.exists(os.path.join(root, n, "summary.json")) for n in first)
  assert not any(os.path.exists(os.path.join(root, n, "summary.json")) for n in second)
  partial = {n: _epoch_rows(os.path.join(root, n)) for n in second}
  assert all(len(rows) == 1 for rows in partial.values())

  # compare reads a killed ablation: the killed program's variants are "incomplete".
  runs = [compare.read_run(os.path.join(root, n)) for n in names if n != "ablation.json"]
  assert sorted(r.status for r in runs) == ["done"] * 4 + ["incomplete"] * 4
  table = compare.compare(runs)
  assert {r.runs[0].status for r in table.rows} == {"done", "incomplete"}

  resumed = _script("ablate.py", *args, cache=cache)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  for name in first:
    assert f"skip {name}: done already" in resumed.stdout
  assert "[2/2] 4 vmapped members of one program" in resumed.stdout
  assert "8 variants: 4 done; finished before: 4 done" in resumed.stdout
  for name in second:  # rerun from scratch: each epoch once, the same numbers as before the kill
    rows = _epoch_rows(os.path.join(root, name))
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0] == {**partial[name][0], "time": rows[0]["time"]}
    assert json.load(open(os.path.join(root, name, "summary.json")))["status"] == "done"

  out = str(tmp_path / "cmp")
  shown = _script("compare.py", *sorted(glob.glob(os.path.join(root, "*"))), "--out", out)
  assert shown.returncode == 0, shown.stderr[-3000:]
  header = shown.stdout.splitlines()[0].split()
  assert header[:3] == ["model.hidden_sizes", "optimizer.learning_rate", "runs"]
  assert header[3:] == ["best_val_accuracy", "test_accuracy", "final_train_loss", "epochs",
                        "wall_time_s", "status", "verdict"]
  body = shown.stdout.splitlines()[1:5]
  assert all(" ± " in line and " 2/2 " in line for line in body)
  assert "mean ± std (ddof=1) over seeds" in shown.stdout
  record = json.load(open(os.path.join(out, "compare.json")))
  assert record["differing_fields"] == ["model.hidden_sizes", "optimizer.learning_rate", "seed"]
  means = [row["best_val_accuracy_mean"] for row in record["rows"]]
  assert means == sorted(means, reverse=True) and len(record["runs"]) == 8
  with open(os.path.join(out, "compare.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 and {r["runs"] for r in rows} == {"2"}
  assert float(rows[0]["best_val_accuracy_mean"]) == pytest.approx(means[0])
  assert os.path.getsize(os.path.join(out, "compare.png")) > 10_000


@pytest.mark.parametrize("flags, message", [
    (["--grid=optimizer.learning_rate=1e-3,fast"],
     "--grid='optimizer.learning_rate=1e-3,fast': 'fast' is not a number "
     "(config.optimizer.learning_rate is a number, now 0.001)"),
    (["--grid=optimizer.lr=1e-3"],
     "unknown config field 'optimizer.lr' in --grid='optimizer.lr=1e-3'; config.optimizer has: "),
    (["--grid=optimizer.learning_rate=1e-3,-1"],
     "variant optimizer.learning_rate=-1,seed=0: config.optimizer: "),
])
def test_a_bad_grid_exits_1_with_one_line_and_writes_nothing(tmp_path, flags, message):
  root = tmp_path / "ablation"
  result = _script("ablate.py", f"--workdir={root}", *flags)
  assert result.returncode == 1, result.stderr[-3000:]
  assert result.stderr.startswith(f"ablate.py: error: {message}")
  assert len(result.stderr.strip().splitlines()) == 1
  assert not root.exists()


def test_a_variant_workdir_holding_another_experiment_is_refused(tmp_path):
  variant = tmp_path / "ablation" / "loss.l2=0,seed=0"
  variant.mkdir(parents=True)
  from configs import default
  config = default.get_config()
  config.model.hidden_sizes = (8,)
  (variant / "config.json").write_text(config.to_json())
  result = _script("ablate.py", f"--workdir={tmp_path / 'ablation'}", "--grid=loss.l2=0,1e-3")
  assert result.returncode == 1
  assert result.stderr.startswith(
      f"ablate.py: error: {variant} holds a run with a different config (1 field differs: "
      "model.hidden_sizes: [8] (saved) vs [256, 256] (now))")
  assert len(result.stderr.strip().splitlines()) == 1
  assert sorted(os.listdir(tmp_path / "ablation")) == ["loss.l2=0,seed=0"]
  assert os.listdir(variant) == ["config.json"]
  no_workdir = _script("ablate.py", "--grid=loss.l2=0,1e-3")
  assert no_workdir.returncode == 1 and no_workdir.stderr == (
      "ablate.py: error: --workdir is required: the ablation's directory, e.g. "
      "--workdir=runs/lr_init (re-running with it resumes)\n")


def test_compare_mistakes_are_one_line_and_write_nothing(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  result = _script("compare.py", str(empty))
  assert (result.returncode, result.stderr) == (1, (
      f"compare.py: error: {empty} is not a run's workdir (it has none of summary.json, "
      "config.json, metrics.jsonl)\n"))
  for lr in (1e-3, 1e-2):  # runs killed before their first epoch: a config.json and nothing else
    (tmp_path / f"lr{lr}").mkdir()
    (tmp_path / f"lr{lr}" / "config.json").write_text(json.dumps(
        {"seed": 0, "optimizer": {"learning_rate": lr}, "train": {"num_epochs": 3}}))
  result = _script("compare.py", str(tmp_path / "lr0.001"), str(tmp_path / "lr0.01"),
                   "--sort=val_acc")
  assert (result.returncode, result.stderr) == (1, (
      "compare.py: error: --sort='val_acc' is not a column; sort by one of best_val_accuracy, "
      "test_accuracy, final_train_loss, epochs, wall_time_s, optimizer.learning_rate\n"))
  assert sorted(os.listdir(tmp_path)) == ["empty", "lr0.001", "lr0.01"]
