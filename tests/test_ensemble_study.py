"""research.ensemble.study (scripts/ensemble.py): a tiny study end to end, strict JSON, the
report's fixes (no positive 'gain kept' from a negative gain), and one-line config errors."""
import json
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from configs import ensemble_digits
from research.ensemble import distill, report, study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config():
  config = ensemble_digits.get_config()
  config.data.subset = 256
  config.model.hidden_sizes = (32,)
  config.train.num_epochs = 2
  config.averaging.polyak_start_epoch = 1
  config.ensemble.kinds = "seeds,checkpoints,averages"
  config.ensemble.num_members = 2
  config.ensemble.timing_repeats = 1
  config.distill.num_epochs = 1
  return config


def _strict(text):
  def refuse(constant):
    raise ValueError(f"not valid JSON: {constant}")
  return json.loads(text, parse_constant=refuse)


def test_tiny_study_writes_strict_json_tables_and_figure(tmp_path):
  out = study.run_study(_tiny_config(), str(tmp_path), log=lambda _: None)
  on_disk = _strict((tmp_path / "ensemble.json").read_text())
  assert set(on_disk["ensembles"]) == {"seeds", "seeds_ema", "checkpoints", "averages"}
  assert [c["k"] for c in on_disk["ensembles"]["seeds"]["curve"]["test"]] == [1, 2]
  cost = on_disk["ensembles"]["seeds"]["cost"]
  assert cost["k"] == 2 and set(cost["spread_s"]) == {"one", "vmapped", "mapped", "sequential"}
  assert set(out["single_models"]) == {"best", "final", "ema", "polyak"}
  # The distillation ratio is null (not a bare NaN) when the ensemble gains nothing.
  for split in ("val", "test"):
    row = on_disk["distillation"][split]
    if row["ensemble"] <= row["single"]:
      assert row["gain_kept"] is None
  image = matplotlib.image.imread(tmp_path / "figures" / "ensemble_accuracy_vs_k.png")
  assert image.shape[0] > 300 and image.shape[1] > 500
  assert "== seeds ==" in (tmp_path / "ensemble.txt").read_text()


def test_gain_kept_is_never_positive_for_a_worse_ensemble():
  assert distill.gain_kept(student=0.95, single=0.90, ensemble=1.00) == pytest.approx(0.5)
  # Ensemble WORSE than the single model: no gain to keep (was 3.00 = -0.03 / -0.01).
  assert np.isnan(distill.gain_kept(student=0.87, single=0.90, ensemble=0.89))
  assert report._ratio(float("nan")) == "n/a"


def test_json_writer_turns_nan_into_null(tmp_path):
  report.write_json({"a": float("nan"), "b": [np.float32(1.5), np.inf]}, str(tmp_path / "x.json"))
  assert _strict((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.5, None]}


@pytest.mark.parametrize("override, message", [
    ("--config.ensemble.num_members=0", "config.ensemble.num_members=0 must be an integer >= 1."),
    ("--config.ensemble.kinds=bagging", "config.ensemble.kinds='bagging' has unknown or no kinds "
                                        "['bagging']; known: seeds, checkpoints, averages, topk"),
    ("--config.distill.alpha=2.0", "config.distill.alpha=2.0 must be in [0, 1]."),
    ("--config.ensemble.workdirs=/nonexistent",
     "config.ensemble.workdirs='/nonexistent' holds no run workdir (a directory with "
     "metrics.jsonl) and no search directory; give run workdirs, globs or a search dir, or '' "
     "for a small search of its own."),
])
def test_bad_study_config_is_one_line_and_writes_nothing(tmp_path, override, message):
  workdir = tmp_path / "study"
  result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "ensemble.py"),
                           f"--workdir={workdir}", override], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 1
  assert result.stderr == f"ensemble.py: error: {message}\n"
  assert not workdir.exists()
