"""A population of P trials in one vmapped program equals P sequential training runs; a real
worker trains trials end to end on digits."""
import json
import os

import pytest

import configs.search_digits as search_digits


def _member(lr, mu, wd, l2, dropout, seed):
  config = search_digits.get_config()
  config.model.hidden_sizes = (32,)
  config.data.subset = 192
  config.train.batch_size = 32
  config.train.num_epochs = 2
  config.optimizer.learning_rate, config.optimizer.mu = lr, mu
  config.optimizer.weight_decay, config.loss.l2 = wd, l2
  config.model.dropout, config.seed = dropout, seed
  return config


def test_population_equals_sequential_trials(tmp_path):
  from research import train
  from research.search import population
  configs = [_member(0.05, 0.9, 1e-4, 0.0, 0.0, 1), _member(0.01, 0.6, 0.0, 1e-3, 0.3, 2),
             _member(0.1, 0.8, 1e-3, 1e-2, 0.5, 3)]
  workdirs = [str(tmp_path / f"p{k}") for k in range(3)]
  for w in workdirs:
    os.makedirs(w)
  result = population.train_population(configs, workdirs)
  keys = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate")
  for k, config in enumerate(configs):
    config.checkpoint.enabled = False
    single = train.train_and_evaluate(config, str(tmp_path / f"s{k}"), log=None)
    assert len(single.history) == len(result.history[k]) == 2
    for a, b in zip(single.history, result.history[k]):
      for key in keys:
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (k, key)
    assert result.best_val_accuracy[k] == pytest.approx(single.best_val_accuracy, abs=1e-6)
  # members really differ (different hyperparameters, different results)
  assert len({round(h[-1]["val_loss"], 4) for h in result.history}) == 3
  # each member's folder: epoch rows and a best checkpoint that research.train can restore
  rows = [json.loads(line) for line in open(os.path.join(workdirs[2], "metrics.jsonl"))]
  assert [r["epoch"] for r in rows] == [1, 2]
  best = train.checkpoints.restore_best(workdirs[2], config=configs[2])
  assert best["epoch"] == result.best_epoch[2]
  assert best["val_accuracy"] == pytest.approx(result.best_val_accuracy[2])


def test_population_rejects_members_that_change_shapes():
  from research.search import population
  a, b = _member(0.05, 0.9, 0, 0, 0, 1), _member(0.05, 0.9, 0, 0, 0, 1)
  b.model.hidden_sizes = (64,)
  with pytest.raises(ValueError, match=r"member 1 differs from member 0 in 'model.hidden_sizes'"):
    population.train_population([a, b])


def test_population_divergence_stops_only_that_member():
  from research.search import population
  configs = [_member(0.05, 0.9, 0, 0, 0, 1), _member(50.0, 0.9, 0, 0, 0, 2)]
  result = population.train_population(configs)
  assert result.errors[0] is None and len(result.history[0]) == 2
  assert result.errors[1].startswith("training diverged in epoch 1")
  assert result.history[1] == [] and result.best_val_accuracy[1] == -1


def test_worker_trains_real_trials_and_population(tmp_path):
  """Master stage + in-process worker with research.train (P=1) and a population (P=2)."""
  from optuna.trial import TrialState
  from research.search import master, results, worker
  config = _member(0.05, 0.9, 0, 0, 0, 0)
  config.train.num_epochs = 1
  config.search.stage_epochs, config.search.stage_trials = (1,), (4,)
  config.search.space = {"learning_rate": {"path": "optimizer.learning_rate", "low": 1e-2,
                                           "high": 0.3, "scale": "log"},
                         "dropout": {"path": "model.dropout", "low": 0.0, "high": 0.5,
                                     "scale": "linear"}}
  config.search.pruner = "none"
  search_dir = str(tmp_path / "search")
  opened = master.open_search(config, search_dir)
  study = master.prepare_stage(opened.storage, opened.name, opened.stages[0], opened.space,
                               config.search, 0, log=lambda _: None)
  logs = []
  assert worker.serve(opened.url, "search_digits", exit_when_idle=True, max_trials=2,
                      log=logs.append) == 2
  assert worker.serve(opened.url, "search_digits", exit_when_idle=True, population=2,
                      log=logs.append) == 2
  trials = study.get_trials()
  assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, logs
  assert all(0.1 < t.value <= 1.0 for t in trials)  # above chance (10 classes) after 1 epoch
  best = results.top_trials(search_dir, 4)
  assert len(best) == 4
  accs = [json.load(open(os.path.join(p, "trial.json")))["best_val_accuracy"] for p in best]
  assert accs == sorted(accs, reverse=True)
  assert all(os.path.basename(p).startswith(f"acc{a:.4f}_s0_t") for p, a in zip(best, accs))
  report = master.report(opened.storage, opened.name, search_dir, 1, config.search, [], opened.url)
  assert report.best.value == pytest.approx(max(t.value for t in trials))
  assert all(os.path.getsize(f) > 10_000 for f in report.figures) and len(report.figures) == 2
