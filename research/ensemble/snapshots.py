"""Per-epoch snapshots of one run (orbax), for checkpoint ensembles ("different checkpoints of a
single run").

Layout: ``<directory>/<step>/{variables, info}`` written by an
``orbax.checkpoint.CheckpointManager`` that keeps every step (``max_to_keep=None``). ``variables``
is ``{'params', 'batch_stats'}``; ``info`` is a small JSON dict (epoch, val_accuracy, ...). The step
is the epoch number.
A stacked K-member state may be saved as one snapshot (``stacked=True`` in the info); loading
then returns K members.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from research.ensemble.members import Member, unstack_variables


def _manager(directory: str, create: bool) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=None, create=create),
      item_names=("variables", "info"))


class SnapshotWriter:
  """Saves ``{'params', 'batch_stats'}`` every epoch under ``directory`` (keeps all of them)."""

  def __init__(self, directory: str):
    self.directory = os.path.abspath(directory)
    self._manager = _manager(self.directory, create=True)

  def save(self, step: int, variables: Any, info: dict | None = None) -> None:
    """Writes snapshot ``step`` (an epoch number); ``info`` must be JSON-serialisable."""
    info = {"step": int(step), **(info or {})}
    self._manager.save(int(step), args=ocp.args.Composite(
        variables=ocp.args.StandardSave(jax.device_get(variables)),
        info=ocp.args.JsonSave(info)))

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def list_snapshots(directory: str) -> list[int]:
  """The saved steps under ``directory`` (sorted); [] when there is none."""
  if not os.path.isdir(directory):
    return []
  manager = _manager(directory, create=False)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def load_snapshot(directory: str, step: int) -> tuple[Any, dict]:
  """``(variables, info)`` of snapshot ``step``.

  Raises:
    ValueError: when ``step`` was not saved (the message lists the saved steps).
  """
  available = list_snapshots(directory)
  if int(step) not in available:
    raise ValueError(f"snapshot step={step!r} is not in {directory}; saved steps: {available}.")
  manager = _manager(directory, create=False)
  try:
    restored = manager.restore(int(step), args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(), info=ocp.args.JsonRestore()))
  finally:
    manager.close()
  variables = jax.tree.map(np.asarray, dict(restored["variables"]))
  return variables, dict(restored["info"])


def members_from_snapshots(directory: str, model, steps: Sequence[int] | None = None,
                           member_index: int | None = None) -> list[Member]:
  """Members for exactly the requested snapshot ``steps`` (all saved steps when None).

  Args:
    directory: a snapshot directory written by :class:`SnapshotWriter`.
    model: the flax module the variables belong to.
    steps: the steps (epochs) to load, in this order.
    member_index: for stacked snapshots (K-seed runs), which member to take; None takes all K.

  Raises:
    ValueError: a requested step is missing (lists the saved ones), or ``member_index`` is out of
      range.
  """
  steps = list_snapshots(directory) if steps is None else [int(s) for s in steps]
  out = []
  for step in steps:
    variables, info = load_snapshot(directory, step)
    if info.get("stacked"):
      per_member = unstack_variables(variables)
      indices = range(len(per_member)) if member_index is None else [member_index]
      for i in indices:
        if not 0 <= i < len(per_member):
          raise ValueError(f"member_index={i} is out of range [0, {len(per_member)}).")
        seeds = info.get("seeds")
        name = f"epoch={step} " + (f"seed={seeds[i]}" if seeds else f"member={i}")
        out.append(Member(name, model, per_member[i], {**info, "member": i, "source": "snapshot"}))
    else:
      out.append(Member(f"epoch={step}", model, variables, {**info, "source": "snapshot"}))
  return out
