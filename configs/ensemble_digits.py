"""Ensembles on digits: K seeds (vmapped), checkpoints of one run, averaged parameters, top-k of a
small search, and distillation of the seed ensemble into one student.

Launch:
    python3 scripts/ensemble.py --config=configs/ensemble_digits.py --workdir=/tmp/ens_digits
    python3 scripts/ensemble.py --config=configs/ensemble_digits.py --workdir=/tmp/ens \
        --config.ensemble.kinds=seeds --config.ensemble.num_members=4

Expected: each kind's accuracy against K (1..num_members) in <workdir>/ensemble.json and
<workdir>/figures/ensemble_accuracy_vs_k.png; a single MLP reaches ~97% validation accuracy, the
seed ensemble usually adds a fraction of a point. Takes a few minutes on 2 CPU cores.
"""
import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.train.num_epochs = 20
  config.monitor.enabled = False       # the ensemble runner does not babysit its members
  config.monitor.figures = False
  # Averages kept in every member's train state (kind 4 and the EMA/Polyak rows).
  config.averaging.ema_decay = 0.99    # ~100-step horizon, ~5 epochs of digits
  config.averaging.polyak_start_epoch = 10
  config.averaging.export = "raw"

  config.ensemble = ml_collections.ConfigDict()
  # Comma-separated subset of: seeds, checkpoints, averages, topk.
  config.ensemble.kinds = "seeds,checkpoints,averages,topk"
  config.ensemble.num_members = 8      # K: curves for 1..K members
  config.ensemble.seed_members = "best"  # best | final | ema | polyak (parameters of each seed)
  # Checkpoint ensemble of the first seed's run: these epochs ('' = the last num_members epochs).
  config.ensemble.checkpoint_epochs = ""
  # Top-k: run workdirs (comma-separated paths or globs) or a search directory; '' = run a
  # small random search of topk_runs runs (learning rate, width, L2) under <workdir>/topk_runs.
  config.ensemble.workdirs = ""
  config.ensemble.topk_runs = 12
  config.ensemble.topk_epochs = 20
  config.ensemble.timing_repeats = 5   # evaluation-cost measurement (median of repeats)
  # Repeat the whole study with seeds config.seed + 100 r (r < repeats) and report mean +- std
  # (<workdir>/summary.txt, figures/ensemble_accuracy_vs_k_mean.png); 1 = one study.
  config.ensemble.repeats = 1

  # Distillation of the seed ensemble (scripts/ensemble.py runs it when enabled).
  config.distill = ml_collections.ConfigDict()
  config.distill.enabled = True
  config.distill.temperature = 4.0
  config.distill.alpha = 0.9           # weight of the T^2-scaled soft term; 1 - alpha on labels
  config.distill.num_epochs = 30
  # Student seed = config.seed + offset: none of the members' seeds (config.seed + 0..K-1).
  config.distill.student_seed_offset = 50
  return config
