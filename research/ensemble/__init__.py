"""research.ensemble: ensembles of every kind, evaluated stacked and vmapped, and distillation.

* :mod:`~research.ensemble.members`   ``Member``; stacked, vmapped evaluation per architecture
  group (a loop across groups); ``member_logits``.
* :mod:`~research.ensemble.combine`   the ensemble averages predicted probabilities; metrics and
  the accuracy of the first k members for k = 1..K.
* :mod:`~research.ensemble.seeds`     K seeds trained at once (``jax.vmap`` over the seed).
* :mod:`~research.ensemble.snapshots` per-epoch snapshots of one run -> checkpoint ensembles.
* :mod:`~research.ensemble.workdirs`  top-k runs of a search / a directory of run workdirs.
* :mod:`~research.ensemble.distill`   distillation loss (T^2-scaled soft term) and student loop.
* :mod:`~research.ensemble.report`    tables, JSON and the accuracy-vs-K figure.

The training-dependent modules (seeds, workdirs, distill_from_members) import research.train /
models / data lazily, so the evaluation tools work on any flax model.
"""
from research.ensemble.combine import (accuracy, cumulative_metrics, ensemble_probabilities,
                                       member_metrics, nll)
from research.ensemble.distill import (distill_from_members, distillation_loss, gain_kept,
                                       train_student)
from research.ensemble.members import (Member, group_by_architecture, member_logits, softmax,
                                       stack_variables, unstack_variables)
from research.ensemble.seeds import SeedsResult, seed_members, train_seeds
from research.ensemble.snapshots import SnapshotWriter, list_snapshots, members_from_snapshots
from research.ensemble.workdirs import members_from_workdirs, rank_workdirs

__all__ = [
    "Member", "SeedsResult", "SnapshotWriter", "accuracy", "cumulative_metrics",
    "distill_from_members", "distillation_loss", "ensemble_probabilities", "gain_kept",
    "group_by_architecture", "list_snapshots", "member_logits", "member_metrics",
    "members_from_snapshots", "members_from_workdirs", "nll", "rank_workdirs", "seed_members",
    "softmax", "stack_variables", "train_seeds", "train_student", "unstack_variables",
]
