"""Coarse-to-fine hyperparameter search on digits: an MLP trained with momentum SGD.

Launch (defaults: two local workers, three stages, SQLite store in the search dir):
    python scripts/search.py                                  # = --config=configs/search_digits.py
    python scripts/search.py --search_dir=/tmp/search_digits --config.search.num_workers=4
    python scripts/search.py --config.search.population=4     # each worker trains 4 trials at once
    python scripts/search.py --config.search.method=halton    # quasi-random instead of random
    python scripts/search.py --config.search.storage=journal:/shared/search.journal
    # more workers later, on any machine that sees the store and the search dir
    # (the master prints it):
    python scripts/search_worker.py --storage=sqlite:////tmp/search_digits/study.db \
        --search=search_digits

Stages: 12 trials x 1 epoch on wide ranges (learning rate 10**U(-4, 1), weight decay 10**U(-6, -1),
momentum 1 - 10**U(-2, -0.3), dropout U(0, 0.6)), then 8 trials x 3 epochs and 4 trials x 8 epochs
on ranges narrowed around each previous stage's 3 best trials. Median pruning from epoch 2.

Expected result: about 3 minutes on 2 CPU cores; the best trial reaches >= 97% validation
accuracy (digits, 269 validation examples: 1 example = 0.37 points); the ranked table, any border
warnings and the two figure paths are printed; ``ls <search_dir>/trials | sort`` ranks the trials.
"""
import ml_collections

from configs import default


def _param(path: str, low: float, high: float, scale: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"path": path, "low": low, "high": high, "scale": scale})


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.data.name = "digits"
  config.model.name = "mlp"
  config.model.hidden_sizes = (128,)
  config.optimizer.name = "momentum"
  config.optimizer.mu = 0.9
  config.train.batch_size = 64
  # Trials write metrics and their best checkpoint; per-trial monitor figures would cost more
  # than the training of a digits trial.
  config.monitor.enabled = False
  config.monitor.figures_every_epochs = 0
  config.monitor.figures = False        # no PNGs per trial: the master draws the study's figures

  config.search = ml_collections.ConfigDict()
  config.search.name = "search_digits"
  config.search.storage = ""          # '' = <search_dir>/study.db; postgresql://...; journal:<path>
  config.search.method = "random"     # random | grid (to compare) | halton | sobol
  config.search.seed = 0              # seeds the sampling of the points
  config.search.space = ml_collections.ConfigDict({
      "learning_rate": _param("optimizer.learning_rate", 1e-4, 10.0, "log"),
      "weight_decay": _param("optimizer.weight_decay", 1e-6, 1e-1, "log"),
      "mu": _param("optimizer.mu", 0.5, 0.99, "one_minus_log"),
      "dropout": _param("model.dropout", 0.0, 0.6, "linear"),
  })
  config.search.stage_epochs = (1, 3, 8)
  config.search.stage_trials = (12, 8, 4)
  config.search.top_k = 3             # best trials of a stage that span the next stage's ranges
  config.search.pad = 0.1             # margin around them (fraction of the range, on its scale)
  config.search.border_fraction = 0.1 # warn when the best value lies in the outer 10%
  config.search.pruner = "median"     # median | successive_halving | none
  config.search.pruner_startup_trials = 3
  config.search.pruner_warmup_epochs = 1
  config.search.reduction_factor = 3  # successive_halving
  config.search.num_workers = 2
  config.search.population = 1        # trials per worker trained at once (jax.vmap)
  config.search.trainer = "research.train:train_and_evaluate"
  config.search.heartbeat_s = 10.0    # each worker records a heartbeat of its trials this often
  config.search.grace_s = 300.0       # a trial without heartbeat for this long is failed
  config.search.pid_check = True      # a dead worker pid on the master's host fails its trial at
                                      # once (False: workers in other PID namespaces, containers)
  config.search.max_retries = 1       # re-runs of a trial whose worker died
  config.search.max_worker_restarts = 2
  config.search.report_top_k = 5
  return config
