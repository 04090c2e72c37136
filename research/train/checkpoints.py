"""Orbax checkpoints of a run: one per epoch, keeping the latest and the best by val accuracy.

Layout: ``<workdir>/checkpoints/<epoch>/{state, meta}`` where ``state`` is the train state
(``flax.serialization.to_state_dict``) and ``meta`` a JSON dict (epoch, validation accuracy, the
host-side loop state such as reduce-on-plateau's counters and the best epoch so far). Saves are
synchronous and atomic (orbax writes a temporary directory and renames it when complete), so a
kill during a save leaves the previous checkpoints intact and a partial one is never read.
Keeping "latest and best" is a combined preservation policy (``AnyPreservationPolicy`` of
``LatestN`` and ``BestN``).
"""
from __future__ import annotations

import os
from typing import Any

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpoint_managers import preservation_policy as policies

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
  """A checkpoint that is missing, unreadable, or does not match the run's config."""


def checkpoint_dir(workdir: str) -> str:
  """``<workdir>/checkpoints`` as an absolute path (orbax needs absolute paths)."""
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR)


def _shapes(tree: Any) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in flat}


def _describe_mismatch(saved: dict[str, tuple], expected: dict[str, tuple]) -> str:
  lines = []
  for key in sorted(expected.keys() - saved.keys())[:3]:
    lines.append(f"  {key}: expected {expected[key]}, missing from the checkpoint")
  for key in sorted(saved.keys() - expected.keys())[:3]:
    lines.append(f"  {key}: in the checkpoint {saved[key]}, unknown to this config")
  # Parameters first: they say most plainly what changed.
  for key in sorted(saved.keys() & expected.keys(), key=lambda k: (not k.startswith("['params']"), k)):
    if saved[key] != expected[key] and len(lines) < 6:
      lines.append(f"  {key}: checkpoint {saved[key]} vs config {expected[key]}")
  return "\n".join(lines)


class Checkpoints:
  """The checkpoints of one workdir (save each epoch; restore latest, best or a given epoch)."""

  def __init__(self, workdir: str, keep_latest: int = 1, keep_best: int = 1,
               create: bool = True):
    if int(keep_latest) < 1 or int(keep_best) < 0:
      raise ValueError(f"config.checkpoint.keep_latest={keep_latest} must be >= 1 and keep_best="
                       f"{keep_best} >= 0.")
    self.directory = checkpoint_dir(workdir)
    if not create and not os.path.isdir(self.directory):
      raise CheckpointError(f"no checkpoints in {os.path.abspath(workdir)!r} ({self.directory} "
                            "does not exist): is it a run workdir?")
    policy = policies.AnyPreservationPolicy([
        policies.LatestN(n=int(keep_latest)),
        policies.BestN(get_metric_fn=lambda m: m["val_accuracy"], reverse=False,
                       n=int(keep_best)),
    ])
    # Handlers named up front, so a manager opened on an existing directory (resume, restore_best)
    # can read item metadata before it has saved anything itself.
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policy, enable_async_checkpointing=False, create=create,
            cleanup_tmp_directories=True))

  def epochs(self) -> list[int]:
    """Epochs with a complete checkpoint, ascending."""
    return sorted(self._manager.all_steps())

  def latest_epoch(self) -> int | None:
    epochs = self.epochs()
    return epochs[-1] if epochs else None

  def save(self, epoch: int, state: Any, meta: dict, val_accuracy: float) -> None:
    """Saves ``state`` and ``meta`` as epoch ``epoch`` (blocks until it is on disk)."""
    state_dict = flax.serialization.to_state_dict(jax.device_get(state))
    self._manager.save(int(epoch), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state_dict), meta=ocp.args.JsonSave(dict(meta))),
        metrics={"val_accuracy": float(val_accuracy)}, force=True)
    self._manager.wait_until_finished()

  def _step_path(self, epoch: int) -> str:
    return os.path.join(self.directory, str(int(epoch)))

  def restore_meta(self, epoch: int) -> dict:
    try:
      restored = self._manager.restore(int(epoch), args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))
    except Exception as e:
      raise CheckpointError(f"checkpoint {self._step_path(epoch)} is unreadable "
                            f"({type(e).__name__}: {e}); delete it to fall back to "
                            f"{self._others(epoch)}.") from None
    return dict(restored["meta"])

  def _others(self, epoch: int) -> str:
    others = [e for e in self.epochs() if e != epoch]
    return f"epochs {others}" if others else "a fresh run (no other checkpoint)"

  def restore(self, epoch: int, target: Any) -> tuple[Any, dict]:
    """``(state, meta)`` of ``epoch``, with ``state`` shaped like ``target`` (a fresh state).

    Raises:
      CheckpointError: the checkpoint is unreadable (corrupt, truncated) or its tensors do not
        match ``target`` (the config changed the model or optimizer): the message names the
        path and the first mismatching leaves.
    """
    path = self._step_path(epoch)
    target_dict = flax.serialization.to_state_dict(jax.device_get(target))
    try:
      metadata = self._manager.item_metadata(int(epoch))["state"]
      saved_tree = getattr(metadata, "tree", metadata)
      saved = {k: tuple(getattr(v, "shape", np.shape(v))) for k, v in
               ((jax.tree_util.keystr(p), leaf) for p, leaf in
                jax.tree_util.tree_flatten_with_path(saved_tree)[0])}
    except Exception as e:
      raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); delete "
                            f"it to fall back to {self._others(epoch)}.") from None
    expected = _shapes(target_dict)
    if saved != expected:
      raise CheckpointError(
          f"checkpoint {path} does not match this config (model, optimizer or averaging "
          f"changed?):\n{_describe_mismatch(saved, expected)}\nUse another --workdir for a "
          "different experiment.")
    try:
      restored = self._manager.restore(int(epoch), args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target_dict), meta=ocp.args.JsonRestore()))
    except Exception as e:
      raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); delete "
                            f"it to fall back to {self._others(epoch)}.") from None
    state = flax.serialization.from_state_dict(target, restored["state"])
    return state, dict(restored["meta"])

  def best_epoch(self) -> int | None:
    """The kept epoch with the highest validation accuracy (the latest on ties, as BestN keeps)."""
    best, best_acc = None, -np.inf
    for epoch in self.epochs():
      acc = float(self.restore_meta(epoch).get("val_accuracy", -np.inf))
      if acc >= best_acc:
        best, best_acc = epoch, acc
    return best

  def close(self) -> None:
    self._manager.close()


def restore_best(workdir: str, *, config: Any, dataset=None) -> dict:
  """``{'params', 'batch_stats', 'epoch', 'val_accuracy'}`` of a run's best checkpoint.

  ``params`` are the exported parameters (``config.averaging.export``: raw, ema or polyak); for
  averaged parameters of a batch-norm model the statistics are recomputed on the training data.
  """
  from research import averaging
  from research.train.experiment import build_experiment, init_state
  checkpoints = Checkpoints(workdir, create=False)
  try:
    epoch = checkpoints.best_epoch()
    if epoch is None:
      raise CheckpointError(f"{checkpoints.directory} holds no checkpoint.")
    experiment = build_experiment(config, dataset)
    state, meta = checkpoints.restore(epoch, init_state(experiment))
  finally:
    checkpoints.close()
  export = config.averaging.get("export", "raw")
  params = averaging.select_params(state.params, state.averages, export)
  batch_stats = state.batch_stats
  if export != "raw" and jax.tree.leaves(batch_stats):
    batch_stats = averaging.recompute_batch_stats(experiment.model, params, batch_stats,
                                                  experiment.dataset.x_train)
  return {"params": params, "batch_stats": batch_stats, "epoch": epoch,
          "val_accuracy": meta.get("val_accuracy")}
