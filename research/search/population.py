"""P trials of one stage in one compiled program: ``research.train.train_members``.

The members of a population share data, architecture, update rule and batch size, and differ in
what changes no shape (``research.train.members.VARYING_PATHS``: optimizer hyperparameters, L2,
dropout rate, seed, initialization). Member ``k`` equals a single ``train_and_evaluate`` of
``configs[k]`` up to float reassociation; a diverging member stops alone, a pruned one stops
reporting, and the program stops when every member has stopped. See ``research.train.members``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import ml_collections

from research.train.members import VARYING_PATHS, MembersResult, check_compatible, train_members

PopulationResult = MembersResult

__all__ = ["PopulationResult", "VARYING_PATHS", "check_compatible", "train_population"]


def train_population(configs: Sequence[ml_collections.ConfigDict],
                     workdirs: Sequence[str] | None = None, *,
                     on_epoch_end: Callable[[int, list], Sequence[bool]] | None = None,
                     dataset=None, log: Callable[[str], None] | None = None) -> MembersResult:
  """Trains ``len(configs)`` trials at once (``research.train.train_members``): per member, one
  ``metrics.jsonl`` row per epoch and its best checkpoint in ``workdirs[k]``; ``on_epoch_end(epoch,
  records) -> stop flags`` prunes members.

  Raises:
    ValueError: configs that differ elsewhere, or options a population does not support.
  """
  return train_members(configs, workdirs, on_epoch_end=on_epoch_end, dataset=dataset, log=log)
