"""research.search: hyperparameter search — random on each parameter's scale, coarse to fine,
workers and a master sharing an Optuna study, whole populations trained at once.
The package's reference (stores, claims, heartbeats, locks, continuing a search, the dashboard,
CSV export): research/search/README.md.

* :mod:`~research.search.validate`   every ``config.search`` value checked before anything runs
  (``validate_search_config``, used by the master and by every worker).
* :mod:`~research.search.space`      ranges and scales (log, linear, one-minus-log); random, grid,
  Halton and Sobol point sets.
* :mod:`~research.search.stages`     coarse-to-fine stages; ranges narrowed around the best trials.
* :mod:`~research.search.border`     warnings when the best value sits near an edge of its
  configured range.
* :mod:`~research.search.study`      the shared store (SQLite file, PostgreSQL or another SQLAlchemy
  URL, journal file), atomic claims, heartbeats, failing and retrying the trials of dead workers.
* :mod:`~research.search.lock`       one master per search (lock file + a stamp in the store).
* :mod:`~research.search.trials`     a trial's config and folder (named by validation accuracy).
* :mod:`~research.search.worker`     takes trials, trains them, reports every epoch, prunes.
* :mod:`~research.search.population` P trials in one compiled program (``jax.vmap`` over learning
  rate, regularization, momentum, dropout rate, seed).
* :mod:`~research.search.master`     runs the stages, launches and watches workers, reports.
* :mod:`~research.search.results`    ranked table, figures, ``trials.csv``, :func:`top_trials`.
* :mod:`~research.search.postgres`   a throwaway PostgreSQL server (tests, one machine).
* :mod:`~research.search.synthetic`  a stand-in trainer (no JAX) to try a store and workers.
"""
from research.search.border import BorderWarning, border_warnings
from research.search.results import collect, ranked_table, scan_trials, top_trials
from research.search.space import METHODS, SCALES, Param, Space, make_param, sample, unit_points
from research.search.stages import Stage, narrow, stages_from_config
from research.search.validate import SearchPlan, validate_search_config

__all__ = [
    "BorderWarning", "METHODS", "Param", "SCALES", "SearchPlan", "Space", "Stage",
    "border_warnings", "collect", "make_param", "narrow", "ranked_table", "sample", "scan_trials",
    "stages_from_config", "top_trials", "unit_points", "validate_search_config",
]
