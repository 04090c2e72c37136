"""Search spaces, sampling on scales, narrowing from stage to stage, border warnings, ranking."""
import json
import os

import numpy as np
import pytest
from scipy import stats

from research.search import border, results, stages
from research.search.space import Space, make_param, sample, unit_points


def _space(lr=(1e-6, 10.0), mu=(0.5, 0.999), dropout=(0.0, 1.0)):
  return Space.from_dict({
      "learning_rate": {"path": "optimizer.learning_rate", "low": lr[0], "high": lr[1],
                        "scale": "log"},
      "mu": {"path": "optimizer.mu", "low": mu[0], "high": mu[1], "scale": "one_minus_log"},
      "dropout": {"path": "model.dropout", "low": dropout[0], "high": dropout[1],
                  "scale": "linear"},
  })


def test_log10_of_sampled_learning_rates_is_uniform():
  lrs = np.array([p["learning_rate"] for p in sample(_space(), 2000, seed=0)])
  assert lrs.min() >= 1e-6 and lrs.max() <= 10.0
  # learning_rate = 10 ** uniform(-6, 1): log10 is U(-6, 1) ...
  assert stats.kstest(np.log10(lrs), stats.uniform(loc=-6, scale=7).cdf).pvalue > 0.01
  # ... and the same test rejects linear sampling of the same range (the test has power).
  linear = np.random.default_rng(0).uniform(1e-6, 10.0, 2000)
  assert stats.kstest(np.log10(linear), stats.uniform(loc=-6, scale=7).cdf).pvalue < 1e-6


def test_one_minus_log_spaces_momentum_by_decades():
  mu = make_param("mu", "optimizer.mu", 0.9, 0.999, "one_minus_log")
  np.testing.assert_allclose(mu.from_unit([0.0, 0.5, 1.0]), [0.9, 0.99, 0.999], rtol=1e-12)
  np.testing.assert_allclose(mu.to_unit([0.9, 0.99, 0.999]), [0.0, 0.5, 1.0], atol=1e-12)
  values = np.array([p["mu"] for p in sample(_space(mu=(0.9, 0.999)), 2000, seed=1)])
  assert stats.kstest(np.log10(1 - values), stats.uniform(loc=-3, scale=2).cdf).pvalue > 0.01


@pytest.mark.parametrize("scale,low,high", [("linear", -2.0, 3.0), ("log", 1e-5, 1e2),
                                            ("one_minus_log", 0.0, 0.9999)])
def test_unit_round_trip(scale, low, high):
  param = make_param("p", "a.b", low, high, scale)
  u = np.linspace(0, 1, 11)
  np.testing.assert_allclose(param.to_unit(param.from_unit(u)), u, atol=1e-12)
  assert param.from_unit(0.0) == pytest.approx(low) and param.from_unit(1.0) == pytest.approx(high)


def test_grid_and_quasi_random_point_sets():
  grid = unit_points("grid", 10, 2, seed=0)  # floor(sqrt(10)) = 3 per axis
  assert grid.shape == (9, 2)
  np.testing.assert_allclose(sorted(set(grid[:, 0])), [1 / 6, 0.5, 5 / 6])
  for method in ("halton", "sobol"):
    points = unit_points(method, 64, 3, seed=0)
    assert points.shape == (64, 3) and points.min() >= 0 and points.max() < 1
    # low discrepancy: every axis is covered more evenly than i.i.d. random points would be
    assert stats.kstest(points[:, 0], "uniform").statistic < 0.05
  np.testing.assert_array_equal(unit_points("random", 5, 2, 3), unit_points("random", 5, 2, 3))


@pytest.mark.parametrize("kwargs,message", [
    (dict(scale="cubic"), "scale='cubic' is unknown; known: linear, log, one_minus_log"),
    (dict(low=0.0, scale="log"), "low=0.0 must be > 0 on the log scale"),
    (dict(high=1.0, scale="one_minus_log"), "high=1.0 must be < 1 on the one_minus_log"),
    (dict(low=2.0, high=1.0), "low=2.0 must be < high=1.0"),
])
def test_bad_space_is_rejected_with_the_value(kwargs, message):
  args = dict(name="lr", path="optimizer.learning_rate", low=1e-3, high=0.5, scale="linear")
  args.update(kwargs)
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    make_param(**args)
  with pytest.raises(ValueError, match="sampling method 'lhs' is unknown"):
    unit_points("lhs", 3, 1, 0)


def test_narrowing_around_the_best_trials_on_each_scale():
  sp = _space()
  # accuracy peaks at lr = 1e-2, mu = 0.99, dropout = 0.2
  points = sample(sp, 200, seed=3)
  scores = [-abs(np.log10(p["learning_rate"]) + 2) - abs(np.log10(1 - p["mu"]) + 2)
            - 3 * abs(p["dropout"] - 0.2) for p in points]
  narrowed = stages.narrow(sp, points, scores, top_k=5, pad=0.05)
  top = stages.top_points(points, scores, 5)
  for param, old in zip(narrowed.params, sp.params):
    u = old.to_unit([t[param.name] for t in top])
    # exactly [min - pad, max + pad] of the top 5 on the old scale
    assert old.to_unit(param.low) == pytest.approx(max(0.0, u.min() - 0.05), abs=1e-9)
    assert old.to_unit(param.high) == pytest.approx(min(1.0, u.max() + 0.05), abs=1e-9)
    assert old.low <= param.low < param.high <= old.high
    assert param.scale == old.scale
  assert narrowed["learning_rate"].low < 1e-2 < narrowed["learning_rate"].high
  assert narrowed["mu"].low < 0.99 < narrowed["mu"].high
  assert narrowed["dropout"].low < 0.2 < narrowed["dropout"].high
  # the learning-rate range shrinks from 7 decades to well under 3
  assert np.log10(narrowed["learning_rate"].high / narrowed["learning_rate"].low) < 3
  # the next stage samples inside the narrowed ranges only
  for p in sample(narrowed, 50, seed=4):
    assert narrowed["learning_rate"].low <= p["learning_rate"] <= narrowed["learning_rate"].high


def test_narrowing_errors():
  with pytest.raises(ValueError, match="no finished trial"):
    stages.narrow(_space(), [], [], top_k=3, pad=0.1)
  with pytest.raises(ValueError, match=r"pad=0.7 must be in \(0, 0.5\]"):
    stages.narrow(_space(), [{"learning_rate": 1e-3, "mu": 0.9, "dropout": 0.1}], [1.0],
                  top_k=1, pad=0.7)


def test_stages_from_config():
  class Cfg:
    stage_epochs, stage_trials = (1, 5, 20), (16, 8, 4)
  assert stages.stages_from_config(Cfg) == [stages.Stage(0, 1, 16), stages.Stage(1, 5, 8),
                                            stages.Stage(2, 20, 4)]
  Cfg.stage_trials = (16, 8)
  with pytest.raises(ValueError, match="must be non-empty and of equal length"):
    stages.stages_from_config(Cfg)


def test_border_warning_names_parameter_and_direction():
  sp = _space()
  points = [{"learning_rate": 2e-6, "mu": 0.9, "dropout": 0.5},    # best: lr in the lowest 10%
            {"learning_rate": 3e-6, "mu": 0.95, "dropout": 0.97},
            {"learning_rate": 1e-2, "mu": 0.9, "dropout": 0.5}]
  found = border.border_warnings(sp, points, [0.95, 0.90, 0.50], fraction=0.1, top_k=2)
  assert [(w.name, w.side) for w in found] == [("learning_rate", "low")]
  w = found[0]
  assert w.count == 2 and w.top_k == 2 and w.value == 2e-6
  assert w.suggestion == pytest.approx(10 ** -9.5)  # half the 7-decade width further down
  assert "learning_rate" in w.message and "widen the range downward" in w.message
  assert "lowest 10%" in w.message and "log scale" in w.message
  # best dropout at the top of its linear range and best mu at 1 - 10**-2.9
  found = border.border_warnings(sp, [{"learning_rate": 1e-3, "mu": 1 - 10 ** -2.9,
                                       "dropout": 0.95}], [1.0])
  assert {(w.name, w.side) for w in found} == {("dropout", "high"), ("mu", "high")}
  assert all("upward" in w.message for w in found)
  # nothing near an edge: no warning
  assert border.border_warnings(sp, [{"learning_rate": 1e-3, "mu": 0.95, "dropout": 0.5}],
                                [1.0]) == []


def test_top_trials_ranks_folders_and_reports_corrupt_ones(tmp_path):
  root = tmp_path / "trials"
  for name, state, acc in [("acc0.9000_s0_t0000", "COMPLETE", 0.9),
                           ("acc0.9500_s1_t0001", "COMPLETE", 0.95),
                           ("pruned_acc0.9900_s0_t0002", "PRUNED", 0.99),
                           ("failed_s0_t0003", "FAIL", None)]:
    (root / name).mkdir(parents=True)
    (root / name / "trial.json").write_text(json.dumps(
        {"state": state, "best_val_accuracy": acc, "stage": int(name[-7]),
         "number": int(name[-4:])}))
  (root / "acc0.9900_s1_t0009").mkdir()
  (root / "acc0.9900_s1_t0009" / "trial.json").write_text("{not json")
  corrupt = root / "acc0.9700_s1_t0005"
  (corrupt / "checkpoints" / "3").mkdir(parents=True)
  (corrupt / "trial.json").write_text(json.dumps({"state": "COMPLETE", "best_val_accuracy": 0.97,
                                                  "stage": 1, "number": 5}))
  (corrupt / "checkpoints" / "3" / "_CHECKPOINT_METADATA").write_text("\x00garbage")
  with pytest.warns(RuntimeWarning) as caught:
    best = results.top_trials(str(tmp_path), 5)
  assert [os.path.basename(p) for p in best] == ["acc0.9500_s1_t0001", "acc0.9000_s0_t0000"]
  messages = " ".join(str(w.message) for w in caught)
  assert "acc0.9900_s1_t0009" in messages and "unreadable trial.json" in messages
  assert "corrupt checkpoint file" in messages and "acc0.9700_s1_t0005" in messages
  assert sorted(os.listdir(root))[:2] == ["acc0.9000_s0_t0000", "acc0.9500_s1_t0001"]
  with pytest.raises(ValueError, match="k=0 must be >= 1"):
    results.top_trials(str(tmp_path), 0)


def test_ranked_table_and_figure(tmp_path):
  sp = _space()
  rows = [results.TrialRow(0, i, "COMPLETE", acc, 1, p, f"acc{acc:.4f}_s0_t{i:04d}", None)
          for i, (p, acc) in enumerate(zip(sample(sp, 6, seed=0), [.5, .9, .7, .8, .6, .95]))]
  rows.append(results.TrialRow(0, 6, "FAIL", None, 0, sample(sp, 1, seed=9)[0], None, "diverged"))
  table = results.ranked_table(rows, sp.names)
  lines = table.splitlines()
  assert lines[0].split()[:4] == ["rank", "stage", "trial", "val_acc"]
  assert [line.split()[3] for line in lines[1:7]] == ["0.9500", "0.9000", "0.8000", "0.7000",
                                                      "0.6000", "0.5000"]
  assert lines[-1] == "(7 trials: COMPLETE 6, FAIL 1)"
  path = results.plot_accuracy_vs_params(rows, sp, str(tmp_path / "acc.png"))
  import matplotlib.image
  image = matplotlib.image.imread(path)
  assert image.shape[0] > 200 and image.shape[1] > 3 * 200

