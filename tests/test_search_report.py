"""The search report: border advice against the configured range, failed trials in the accuracy
figure, the trials as CSV."""
import csv
import math

import numpy as np
import pytest

from research.search import border, master, results, study as study_lib
from research.search.space import Space
from tests.search_helpers import synthetic_config

CONFIGURED = {"learning_rate": {"path": "optimizer.learning_rate", "low": 1e-4, "high": 10.0,
                                "scale": "log"}}


def _stage(tmp_path, index, narrowed, results_by_lr):
  """A finished stage on the ``narrowed`` learning-rate range."""
  storage = study_lib.open_storage(f"sqlite:///{tmp_path}/study.db")
  study = study_lib.create_or_load(storage, f"test/stage{index}")
  study.set_user_attr("space", Space.from_dict({"learning_rate": {
      **CONFIGURED["learning_rate"], "low": narrowed[0], "high": narrowed[1]}}).to_dict())
  for lr, accuracy in results_by_lr:
    study.enqueue_trial({"learning_rate": lr})
    trial = study.ask()
    trial.suggest_float("learning_rate", *narrowed, log=True)
    study.tell(trial, accuracy)
  return study


def test_border_advice_never_narrows_the_configured_range(tmp_path):
  """Configured [1e-4, 10]; a stage narrowed to [1e-3, 1.78] whose best trial sits at its top
  edge: judged on the narrowed range, the advice was "raise `high`, e.g. to 75", inside the
  configured range. On the configured range, 1.7 is at 85%: no warning."""
  config = synthetic_config(lr_range=(1e-4, 10.0))
  stage1 = _stage(tmp_path, 1, (1e-3, 1.78), ((1.7, 0.95), (0.01, 0.5), (0.2, 0.7)))
  assert master.stage_warnings(stage1, config.search) == []
  # a best value in the top 10% of the configured range: advice beyond it
  stage2 = _stage(tmp_path, 2, (0.3, 10.0), ((5.0, 0.99), (0.5, 0.9)))
  (line,) = master.stage_warnings(stage2, config.search)
  assert line == ("stage 2: learning_rate: the best trial's value 5 lies in the highest 10% "
                  "of [0.0001, 10] on its log scale (1 of the top 2); widen the range upward "
                  "(raise `high`, e.g. to 3.16e+03).")


@pytest.mark.parametrize("scale, low, high", [("log", 1e-6, 10.0), ("one_minus_log", 0.5, 0.999),
                                              ("one_minus_log", 0.0, 0.9), ("linear", 0.0, 1.0)])
def test_every_suggested_bound_lies_outside_the_configured_range(scale, low, high):
  space = Space.from_dict({"p": {"path": "a.b", "low": low, "high": high, "scale": scale}})
  rng = np.random.default_rng(0)
  for u in np.concatenate([rng.uniform(0, 0.1, 50), rng.uniform(0.9, 1.0, 50)]):
    value = float(space.params[0].from_unit(u))
    for w in border.border_warnings(space, [{"p": value}], [1.0]):
      assert w.suggestion is None or (w.suggestion < low if w.side == "low" else
                                      w.suggestion > high)
      assert w.suggestion is not None or scale == "linear" or w.side == "low"


def _rows():
  sp = Space.from_dict(CONFIGURED)
  rows = [results.TrialRow(0, i, "COMPLETE", acc, 2, {"learning_rate": lr},
                           f"acc{acc:.4f}_s0_t{i:04d}", None, seed=100 + i)
          for i, (lr, acc) in enumerate([(1e-3, 0.81), (1e-2, 0.9712345678901), (1e-1, 0.85)])]
  rows.append(results.TrialRow(0, 3, "PRUNED", 0.6, 1, {"learning_rate": 3e-4},
                               "pruned_acc0.6000_s0_t0003", None, seed=103))
  rows += [results.TrialRow(0, 4, "FAIL", None, 0, {"learning_rate": 2.5}, "fail_s0_t0004",
                            "diverged: training diverged in epoch 1\nmore", seed=104),
           results.TrialRow(0, 5, "FAIL", None, 1, {"learning_rate": 7.0}, "fail_s0_t0005",
                            "no heartbeat from worker h:1 for 301s", seed=105),
           results.TrialRow(0, 6, "COMPLETE", 0.84, 2, {"learning_rate": 0.2}, "acc0.8400_s0_t0006",
                            None, seed=105, retry_of=5)]
  return sp, rows


def test_failed_trials_are_marked_in_the_accuracy_figure(tmp_path):
  import matplotlib.pyplot as plt
  sp, rows = _rows()
  fig = results.accuracy_figure(rows, sp)
  (ax,) = fig.axes
  (failed,) = [c for c in ax.collections if c.get_label() == results.FAILED_LABEL]
  xy = failed.get_offsets()
  np.testing.assert_allclose(xy[:, 0], [2.5, 7.0])  # at their learning rates (the cliff) ...
  shown = [r.value for r in rows if r.state in ("COMPLETE", "PRUNED")]
  assert np.all(xy[:, 1] < min(shown))               # ... below every trial that trained
  assert ax.get_ylim()[0] <= xy[0, 1]
  assert np.allclose(failed.get_facecolor()[0][:3], (1.0, 0.0, 0.0))
  plt.close(fig)
  path = results.plot_accuracy_vs_params(rows, sp, str(tmp_path / "acc.png"))
  assert path.endswith("acc.png")


def test_trials_csv_has_every_trial_in_full_precision(tmp_path):
  _, rows = _rows()
  path = results.write_csv(rows, ["learning_rate"], str(tmp_path / "trials.csv"))
  with open(path) as f:
    table = list(csv.reader(f))
  assert table[0] == ["stage", "trial", "state", "val_accuracy", "epochs", "learning_rate", "seed",
                      "retry_of", "folder", "fail_reason"]
  assert table[2] == ["0", "1", "COMPLETE", "0.9712345678901", "2", "0.01", "101", "",
                      "acc0.9712_s0_t0001", ""]
  assert table[5] == ["0", "4", "FAIL", "", "0", "2.5", "104", "", "fail_s0_t0004",
                      "diverged: training diverged in epoch 1"]
  assert table[7] == ["0", "6", "COMPLETE", "0.84", "2", "0.2", "105", "5", "acc0.8400_s0_t0006",
                      ""]
  assert len(table) == 1 + len(rows)
  assert float(table[2][3]) == rows[1].value and math.isclose(float(table[1][5]), 1e-3)


def test_report_writes_the_csv_next_to_results(tmp_path):
  config = synthetic_config(trials=(3,))
  search_dir = str(tmp_path / "search")
  opened = master.open_search(config, search_dir)
  study = master.prepare_stage(opened.storage, opened.name, opened.stages[0], opened.space,
                               config.search, 0, log=lambda _: None)
  for _ in range(3):
    trial = study_lib.pop_trial(study)
    study.tell(trial, 0.5)
  report = master.report(opened.storage, opened.name, search_dir, 1, config.search, [],
                         opened.url)
  text = (tmp_path / "search" / "results.txt").read_text()
  assert text.splitlines()[-1] == f"trials: {search_dir}/trials.csv"
  with open(f"{search_dir}/trials.csv") as f:
    assert [r["trial"] for r in csv.DictReader(f)] == ["0", "1", "2"]
  assert report.best.value == 0.5
