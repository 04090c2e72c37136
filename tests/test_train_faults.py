"""Nothing lost, nothing counted twice: records, checkpoints and damage around a training run.

Each test reproduces a fault of the fault-injection pass (issue 14) and checks the fix: records of
a run killed before its first checkpoint, checkpoints kept forever after a resume, a leftover of a
kill during a deletion, flipped bytes / missing files in a checkpoint, a torn metrics line, a
garbage config.json, a figures folder that is a file.
"""
import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import pytest

from research import data, train
from research.train import checkpoints as checkpoints_lib
from tests.train_helpers import read_jsonl, small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(epochs, **changes):
  config = small_config(epochs=epochs)
  config.data.subset = 256
  config.monitor.figures = False
  for path, value in changes.items():
    group, field = path.split("__")
    config[group][field] = value
  return config


@pytest.fixture(scope="module")
def dataset():
  return data.load_dataset(_config(1).data)


def _batch_rows(workdir):
  return [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl")) if "batch_loss" in r]


def test_a_diverging_run_run_twice_keeps_its_records_once(tmp_path, dataset):
  """The issue's reproduction: lr 10 diverges in epoch 1 before any checkpoint; the rerun
  used to append a second copy of the epoch's batch rows."""
  config = _config(2, optimizer__learning_rate=10.0)
  workdir = str(tmp_path)
  for _ in range(2):
    with pytest.raises(train.DivergenceError):
      train.train_and_evaluate(config, workdir, dataset=dataset, log=None)
    steps = 256 // 64
    assert len(_batch_rows(workdir)) == steps
  summary = json.load(open(os.path.join(workdir, "summary.json")))
  assert summary["status"] == "diverged" and summary["epochs"] == 0
  verdict = open(os.path.join(workdir, "verdict.txt")).read()
  assert verdict.startswith("exploding: loss grew from") and "learning rate too high" in verdict


def test_rows_left_by_a_kill_before_the_first_checkpoint_are_dropped(tmp_path, dataset):
  workdir = str(tmp_path)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:   # what the killed run wrote
    f.write(json.dumps({"epoch": 0.25, "batch_loss": 2.3}) + "\n")
    f.write(json.dumps({"epoch": 1.0, "train_loss": 2.0}) + "\n")
  train.train_and_evaluate(_config(1), workdir, dataset=dataset, log=None)
  rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert [r["epoch"] for r in rows if "train_loss" in r] == [1.0]
  assert len(_batch_rows(workdir)) == 256 // 64


def test_a_resumed_run_keeps_only_the_latest_and_the_best_checkpoints(tmp_path, dataset):
  workdir = str(tmp_path)
  train.train_and_evaluate(_config(2), workdir, dataset=dataset, log=None)
  result = train.train_and_evaluate(_config(4), workdir, dataset=dataset, log=None)
  kept = sorted(int(e) for e in os.listdir(os.path.join(workdir, "checkpoints")))
  best = max(result.history, key=lambda r: (r["val_accuracy"], r["epoch"]))["epoch"]
  assert kept == sorted({4, best})


def test_damaged_latest_checkpoint_falls_back_to_the_previous_intact_one(tmp_path, dataset):
  """Three flipped bytes in the newest checkpoint's data used to load silently (then NaN)."""
  config = _config(3, checkpoint__keep_latest=2)
  reference = train.train_and_evaluate(config, str(tmp_path / "reference"), dataset=dataset,
                                       log=None)
  workdir = str(tmp_path / "damaged")
  train.train_and_evaluate(_config(2, checkpoint__keep_latest=2), workdir, dataset=dataset,
                           log=None)
  data_files = [os.path.join(root, name)
                for root, _, names in os.walk(os.path.join(workdir, "checkpoints", "2", "state"))
                for name in names if os.path.getsize(os.path.join(root, name)) > 100]
  target = max(data_files, key=os.path.getsize)
  with open(target, "r+b") as f:
    for offset in (40, 41, 42):
      f.seek(offset)
      byte = f.read(1)
      f.seek(offset)
      f.write(bytes([byte[0] ^ 0xFF]))
  lines = []
  result = train.train_and_evaluate(config, workdir, dataset=dataset, log=lines.append)
  said = "\n".join(lines)
  assert "checkpoints/2 is damaged" in said and "does not match its checksum" in said
  assert "falling back to epoch 1, the newest intact checkpoint" in said
  assert os.listdir(os.path.join(workdir, "checkpoints.damaged"))   # kept for inspection
  # Epochs 2 and 3 were trained again from epoch 1: the same result as a run never damaged.
  chex.assert_trees_all_equal(jax.device_get(result.state.params),
                              jax.device_get(reference.state.params))
  assert [r["epoch"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "train_loss" in r] == [1, 2, 3]


@pytest.mark.parametrize("damage, expected", [
    ("metadata", "state/_METADATA is missing"),
    ("data", "is missing"),
    ("garbage", "does not match its checksum"),
])
def test_a_damaged_only_checkpoint_is_named_and_kept(tmp_path, dataset, damage, expected):
  workdir = str(tmp_path)
  train.train_and_evaluate(_config(1), workdir, dataset=dataset, log=None)
  state_dir = os.path.join(workdir, "checkpoints", "1", "state")
  files = sorted(os.path.join(root, name) for root, _, names in os.walk(state_dir)
                 for name in names)
  if damage == "metadata":
    os.remove(os.path.join(state_dir, "_METADATA"))
  elif damage == "data":
    os.remove(max(files, key=os.path.getsize))
  else:
    for path in files:
      with open(path, "wb") as f:
        f.write(b"garbage")
  with pytest.raises(train.CheckpointError) as raised:
    train.train_and_evaluate(_config(2), workdir, dataset=dataset, log=None)
  message = str(raised.value)
  assert message.startswith(f"no intact checkpoint in {workdir}/checkpoints: epoch 1: ")
  assert expected in message and "does not match this config" not in message
  assert os.path.isdir(state_dir)   # nothing already written is lost


def test_a_leftover_of_a_kill_during_deletion_never_breaks_restore_best(tmp_path, dataset):
  workdir = str(tmp_path)
  config = _config(2, checkpoint__keep_latest=2)
  result = train.train_and_evaluate(config, workdir, dataset=dataset, log=None)
  shutil.rmtree(os.path.join(workdir, "checkpoints", "1", "meta"))   # half deleted
  best = train.restore_best(workdir, config=config, dataset=dataset)
  assert best["epoch"] == 2
  assert best["val_accuracy"] == pytest.approx(result.history[1]["val_accuracy"])


def test_a_torn_last_metrics_line_is_dropped_and_said(tmp_path, dataset):
  workdir = str(tmp_path)
  train.train_and_evaluate(_config(1), workdir, dataset=dataset, log=None)
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"epoch": 1.25, "batch_lo')                              # a power cut mid-write
  lines = []
  train.train_and_evaluate(_config(2), workdir, dataset=dataset, log=lines.append)
  assert any("metrics.jsonl: line" in line and "is torn" in line for line in lines)
  assert [r["epoch"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "train_loss" in r] == [1, 2]


def test_broken_records_and_config_name_the_file(tmp_path, dataset):
  workdir = str(tmp_path)
  train.train_and_evaluate(_config(1), workdir, dataset=dataset, log=None)
  path = os.path.join(workdir, "metrics.jsonl")
  rows = open(path).read().splitlines()
  rows[1] = "{not json"
  with open(path, "w") as f:
    f.write("\n".join(rows) + "\n")
  with pytest.raises(train.ResumeError, match=rf"{path}: line 2 is not valid JSON"):
    train.train_and_evaluate(_config(2), workdir, dataset=dataset, log=None)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write("garbage")
  with pytest.raises(train.ResumeError, match=rf"{workdir}/config.json is not a readable config"):
    train.train_and_evaluate(_config(2), workdir, dataset=dataset, log=None)


def test_figures_that_cannot_be_written_never_stop_the_run(tmp_path, dataset):
  workdir = str(tmp_path)
  os.makedirs(workdir, exist_ok=True)
  open(os.path.join(workdir, "figures"), "w").close()   # a file where the folder should be
  config = _config(2, monitor__figures_every_epochs=1)
  config.monitor.figures = True
  lines = []
  result = train.train_and_evaluate(config, workdir, dataset=dataset, log=lines.append)
  assert len(result.history) == 2
  assert any(line.startswith("figures not written: cannot create") for line in lines), lines
  assert json.load(open(os.path.join(workdir, "summary.json")))["status"] == "done"


@pytest.mark.parametrize("workdir_kind, message", [
    ("file", "--workdir={path} is a file, not a directory; choose another --workdir"),
    ("empty", "--workdir is empty; pass a directory, e.g. --workdir=runs/my_run"),
])
def test_train_script_refuses_a_bad_workdir_in_one_line(tmp_path, workdir_kind, message):
  path = tmp_path / "x"
  if workdir_kind == "file":
    path.write_text("not a directory")
  argument = f"--workdir={path}" if workdir_kind == "file" else "--workdir="
  result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"), argument],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr == f"train.py: error: {message.format(path=path)}\n"


def test_checkpoint_checksums_cover_every_file(tmp_path, dataset):
  workdir = str(tmp_path)
  train.train_and_evaluate(_config(1), workdir, dataset=dataset, log=None)
  step = os.path.join(workdir, "checkpoints", "1")
  sums = json.load(open(os.path.join(step, checkpoints_lib.CHECKSUM_FILE)))
  on_disk = {os.path.relpath(os.path.join(root, name), step)
             for root, _, names in os.walk(step) for name in names}
  assert set(sums) == on_disk - {checkpoints_lib.CHECKSUM_FILE}
  assert any(name.startswith("state/") for name in sums)
  assert any(name.startswith("meta/") for name in sums)
