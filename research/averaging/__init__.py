"""research.averaging: EMA (bias-corrected) and Polyak averages of the parameters.

Pure and jittable; see :mod:`research.averaging.averages` for the rules and
:mod:`research.averaging.batch_norm` for batch-norm statistics of averaged weights (recomputed).
"""
from research.averaging.averages import (AVERAGES, AveragesState, averaged_params,
                                         check_averaging_config, ema_rate,
                                         init_averages, init_averages_from_config, select_params,
                                         update_averages)
from research.averaging.batch_norm import recompute_batch_stats

__all__ = [
    "AVERAGES", "AveragesState", "averaged_params", "check_averaging_config", "ema_rate",
    "init_averages", "init_averages_from_config", "recompute_batch_stats", "select_params",
    "update_averages",
]
