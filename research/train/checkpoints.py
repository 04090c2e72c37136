"""Orbax checkpoints of a run: one per epoch, keeping the latest and the best by val accuracy.

Layout: ``<workdir>/checkpoints/<epoch>/{state, meta, SHA256SUMS}`` where ``state`` is the train
state (``flax.serialization.to_state_dict``), ``meta`` a JSON dict (epoch, validation accuracy,
the host-side loop state such as reduce-on-plateau's counters and the best epoch so far) and
``SHA256SUMS`` the checksum of every file orbax wrote. Saves are synchronous and atomic (orbax
writes a temporary directory and renames it when complete), so a kill during a save leaves the
previous checkpoints intact and a partial one is never read.

Which checkpoints are kept is decided here, from the validation accuracy in each checkpoint's
``meta`` (orbax's best-N policy sees no metrics for checkpoints written by an earlier process, so
after a resume it would keep every old one): the ``keep_latest`` newest epochs and the
``keep_best`` best ones (ties: the later epoch).

Damage is detected, never loaded: :meth:`Checkpoints.verify` compares the files with their
checksums (a flipped byte, a missing ``_METADATA`` or data file), and :meth:`restore_latest_good`
falls back to the newest intact checkpoint, moving damaged ones to ``checkpoints.damaged/`` (kept
for inspection, never deleted) and saying so. A leftover of a kill during a deletion (a step
folder missing an item) is treated the same way and never breaks ``best_epoch``.

With several processes (``research.train.distributed``) every process makes the same orbax calls
(saves, restores and deletions are collective: orbax writes and deletes on process 0 and waits for
the others), and what chooses them is decided once, on process 0, and handed to all: which
checkpoints are intact, which to delete, which to restore. Checksums are written and verified by
process 0; the workdir must be on a file system every process sees.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Any, Callable

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from research.train import distributed

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints.damaged"
CHECKSUM_FILE = "SHA256SUMS"
ITEMS = ("state", "meta")


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
  shared = sorted(saved.keys() & expected.keys(),
                  key=lambda k: (not k.startswith("['params']"), k))
  for key in shared:
    if saved[key] != expected[key] and len(lines) < 6:
      lines.append(f"  {key}: checkpoint {saved[key]} vs config {expected[key]}")
  return "\n".join(lines)


def _files(step_path: str) -> list[str]:
  """The files under a step folder (relative paths, sorted), the checksum file excluded."""
  found = []
  for root, _, names in os.walk(step_path):
    for name in names:
      relative = os.path.relpath(os.path.join(root, name), step_path)
      if relative != CHECKSUM_FILE:
        found.append(relative)
  return sorted(found)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


class Checkpoints:
  """The checkpoints of one workdir (save each epoch; restore latest, best or a given epoch)."""

  def __init__(self, workdir: str, keep_latest: int = 1, keep_best: int = 1,
               create: bool = True, log: Callable[[str], None] | None = None):
    if int(keep_latest) < 1 or int(keep_best) < 0:
      raise ValueError(f"config.checkpoint.keep_latest={keep_latest} must be >= 1 and keep_best="
                       f"{keep_best} >= 0.")
    self.workdir = os.path.abspath(workdir)
    self.directory = checkpoint_dir(workdir)
    self.keep_latest, self.keep_best = int(keep_latest), int(keep_best)
    self._log = log or (lambda _: None)
    if not create and not os.path.isdir(self.directory):
      raise CheckpointError(f"no checkpoints in {self.workdir!r} ({self.directory} does not "
                            "exist): is it a run workdir?")
    # Handlers named up front, so a manager opened on an existing directory (resume, restore_best)
    # can read item metadata before it has saved anything itself. No preservation policy: the
    # kept set is decided by _prune from the meta of every checkpoint.
    self._manager = ocp.CheckpointManager(
        self.directory,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=create,
                                             cleanup_tmp_directories=True))
    self._accuracy: dict[int, float] = {}

  # -- listing ---------------------------------------------------------------------------------

  def epochs(self) -> list[int]:
    """Epochs with a complete checkpoint, ascending."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def latest_epoch(self) -> int | None:
    epochs = self.epochs()
    return epochs[-1] if epochs else None

  def _step_path(self, epoch: int) -> str:
    return os.path.join(self.directory, str(int(epoch)))

  # -- integrity -------------------------------------------------------------------------------

  def verify(self, epoch: int) -> str | None:
    """Why checkpoint ``epoch`` is damaged (missing item, missing or changed file), or None.

    A checkpoint written before checksums existed (no ``SHA256SUMS``) is checked for its items
    only.
    """
    path = self._step_path(epoch)
    for item in ITEMS:
      if not os.path.isdir(os.path.join(path, item)):
        return f"its {item!r} item is missing (a kill during a deletion?)"
    sums_path = os.path.join(path, CHECKSUM_FILE)
    if not os.path.exists(sums_path):
      return None
    try:
      with open(sums_path) as f:
        expected = json.load(f)
    except (OSError, ValueError):
      return f"its {CHECKSUM_FILE} is unreadable"
    present = set(_files(path))
    for name, digest in sorted(expected.items()):
      if name not in present:
        return f"{name} is missing"
      if _sha256(os.path.join(path, name)) != digest:
        return f"{name} does not match its checksum (the file changed after it was written)"
    return None

  def _write_checksums(self, epoch: int) -> None:
    path = self._step_path(epoch)
    sums = {name: _sha256(os.path.join(path, name)) for name in _files(path)}
    with open(os.path.join(path, CHECKSUM_FILE + ".tmp"), "w") as f:
      json.dump(sums, f, indent=0, sort_keys=True)
    os.replace(os.path.join(path, CHECKSUM_FILE + ".tmp"), os.path.join(path, CHECKSUM_FILE))

  def set_aside(self, epoch: int, reason: str) -> str:
    """Moves a damaged checkpoint to ``<workdir>/checkpoints.damaged/<epoch>-<time>`` (kept for
    inspection) and says so; returns where it went."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = os.path.join(self.workdir, DAMAGED_DIR, f"{int(epoch)}-{stamp}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(self._step_path(epoch), target)
    self._accuracy.pop(int(epoch), None)
    self._manager.reload()
    self._log(f"checkpoint {self._step_path(epoch)} is damaged ({reason}); moved it to {target}")
    return target

  # -- saving ----------------------------------------------------------------------------------

  def save(self, epoch: int, state: Any, meta: dict, val_accuracy: float) -> None:
    """Saves ``state`` and ``meta`` as epoch ``epoch`` (on disk with its checksums when this
    returns), then deletes the checkpoints that are neither among the latest nor the best."""
    state_dict = flax.serialization.to_state_dict(jax.device_get(state))
    self._manager.save(int(epoch), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state_dict), meta=ocp.args.JsonSave(dict(meta))), force=True)
    self._manager.wait_until_finished()
    if distributed.is_main():   # the files are complete: orbax's save waited for every process
      self._write_checksums(epoch)
    self._accuracy[int(epoch)] = float(val_accuracy)
    self._prune()

  def _val_accuracy(self, epoch: int) -> float | None:
    """The validation accuracy in a checkpoint's meta (None when unreadable)."""
    if epoch not in self._accuracy:
      try:
        self._accuracy[epoch] = float(self.restore_meta(epoch).get("val_accuracy", -np.inf))
      except CheckpointError:
        return None
    return self._accuracy[epoch]

  def kept_epochs(self, epochs: list[int]) -> set[int]:
    """The ``keep_latest`` newest of ``epochs`` and the ``keep_best`` best by validation accuracy
    (ties: the later epoch)."""
    scored = [(self._val_accuracy(e), e) for e in epochs]
    ranked = sorted(((a, e) for a, e in scored if a is not None), reverse=True)
    return set(epochs[-self.keep_latest:]) | {e for _, e in ranked[:self.keep_best]}

  def _prune(self) -> None:
    # Every process lists the steps before process 0 decides (the broadcast waits for all), so
    # each deletes the same ones, which every process's orbax manager knows.
    epochs = self.epochs()
    doomed = distributed.decide(lambda: [e for e in epochs if e not in self.kept_epochs(epochs)])
    for epoch in doomed:
      self._manager.delete(epoch)
      self._accuracy.pop(epoch, None)

  # -- restoring -------------------------------------------------------------------------------

  def restore_meta(self, epoch: int) -> dict:
    """The ``meta`` item of ``epoch``, read by this process alone (orbax's handler, not the
    manager's collective restore: process 0 reads it to decide for every process)."""
    try:
      restored = ocp.JsonCheckpointHandler().restore(epath.Path(self._step_path(epoch)) / "meta")
    except Exception as e:  # noqa: BLE001 - orbax raises many kinds
      raise CheckpointError(f"checkpoint {self._step_path(epoch)} is unreadable "
                            f"({type(e).__name__}: {e}); delete it to fall back to "
                            f"{self._others(epoch)}.") from None
    return dict(restored)

  def _others(self, epoch: int) -> str:
    others = [e for e in self.epochs() if e != epoch]
    return f"epochs {others}" if others else "a fresh run (no other checkpoint)"

  def restore(self, epoch: int, target: Any) -> tuple[Any, dict]:
    """``(state, meta)`` of ``epoch``, with ``state`` shaped like ``target`` (a fresh state).

    Raises:
      CheckpointError: the checkpoint is damaged (checksum), unreadable, or its tensors do not
        match ``target`` (the config changed the model or optimizer): the message names the
        path and the first mismatching leaves.
    """
    restored, meta = self._restore_dict(epoch, target, parts=None)
    return flax.serialization.from_state_dict(target, restored), meta

  def restore_model(self, epoch: int, target: Any) -> tuple[dict, dict]:
    """``({'params', 'batch_stats', 'averages'}, meta)`` of ``epoch``, shaped like those of
    ``target``; the rest of the saved state (the optimizer's) is read as saved, whatever its
    structure. For evaluation: a member trained in a population has the population's optimizer
    state (e.g. its ``loss.l2`` as weight decay), which its own config does not rebuild.

    Raises:
      CheckpointError: as :meth:`restore`, for the model's parts.
    """
    parts = ("params", "batch_stats", "averages")
    restored, meta = self._restore_dict(epoch, target, parts=parts)
    return {part: flax.serialization.from_state_dict(getattr(target, part), restored[part])
            for part in parts}, meta

  def _restore_dict(self, epoch: int, target: Any, parts: tuple[str, ...] | None
                    ) -> tuple[dict, dict]:
    """The saved state as a state dict; ``parts`` (top-level keys) must match ``target``, the
    other keys are read with the saved structure (all of them must match when None)."""
    path = self._step_path(epoch)
    damage = distributed.decide(self.verify, epoch)
    if damage:
      raise CheckpointError(f"checkpoint {path} is damaged: {damage}; delete it to fall back to "
                            f"{self._others(epoch)}.")
    target_dict = flax.serialization.to_state_dict(jax.device_get(target))
    try:
      metadata = self._manager.item_metadata(int(epoch))["state"]
      saved_tree = dict(getattr(metadata, "tree", metadata))
      saved = {k: tuple(getattr(v, "shape", np.shape(v))) for k, v in
               ((jax.tree_util.keystr(p), leaf) for p, leaf in
                jax.tree_util.tree_flatten_with_path(saved_tree)[0])}
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); delete "
                            f"it to fall back to {self._others(epoch)}.") from None
    expected = _shapes(target_dict)
    if parts is not None:
      # Only the model's parts must match; the others are restored as saved.
      prefixes = tuple(f"[{part!r}]" for part in parts)
      saved = {k: v for k, v in saved.items() if k.startswith(prefixes)}
      expected = {k: v for k, v in expected.items() if k.startswith(prefixes)}
      target_dict = {key: (target_dict[key] if key in parts else jax.tree.map(
          lambda leaf: np.zeros(leaf.shape, leaf.dtype), saved_tree[key]))
                     for key in saved_tree}
    if saved != expected:
      raise CheckpointError(
          f"checkpoint {path} does not match this config (model, optimizer or averaging "
          f"changed?):\n{_describe_mismatch(saved, expected)}\nUse another --workdir for a "
          "different experiment.")
    try:
      restored = self._manager.restore(int(epoch), args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target_dict), meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001
      raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); delete "
                            f"it to fall back to {self._others(epoch)}.") from None
    return restored["state"], dict(restored["meta"])

  def restore_latest_good(self, target: Any) -> tuple[int, Any, dict] | None:
    """``(epoch, state, meta)`` of the newest intact checkpoint, or None when there is none.

    Damaged newer checkpoints are set aside (:meth:`set_aside`) and the fall-back is said.

    Raises:
      CheckpointError: checkpoints exist but none is intact (nothing is moved then), or one does
        not match this config.
    """
    latest_good = distributed.decide(self._set_aside_damaged)
    if latest_good is None:
      return None
    self._manager.reload()   # process 0 may have moved damaged ones away
    state, meta = self.restore(latest_good, target)
    return latest_good, state, meta

  def _set_aside_damaged(self) -> int | None:
    """The newest intact epoch (None without checkpoints), after setting aside the damaged
    newer ones; raises :class:`CheckpointError` when none is intact."""
    epochs = self.epochs()
    damaged = {e: self.verify(e) for e in epochs}
    good = [e for e in epochs if not damaged[e]]
    if epochs and not good:
      raise CheckpointError(
          f"no intact checkpoint in {self.directory}: "
          + "; ".join(f"epoch {e}: {why}" for e, why in damaged.items())
          + f". Move {self.directory} away to start afresh.")
    if not good:
      return None
    latest_good = good[-1]
    for epoch in epochs:
      if epoch > latest_good:
        self.set_aside(epoch, damaged[epoch])
    if latest_good != epochs[-1]:
      self._log(f"falling back to epoch {latest_good}, the newest intact checkpoint")
    return latest_good

  def best_epoch(self) -> int | None:
    """The intact epoch with the highest validation accuracy (the latest on ties, as the kept
    set); damaged or unreadable leftovers are skipped. Decided by process 0."""
    return distributed.decide(self._best_epoch)

  def _best_epoch(self) -> int | None:
    best, best_acc = None, -np.inf
    for epoch in self.epochs():
      if self.verify(epoch):
        continue
      acc = self._val_accuracy(epoch)
      if acc is not None and acc >= best_acc:
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
      raise CheckpointError(f"{checkpoints.directory} holds no intact checkpoint.")
    experiment = build_experiment(config, dataset)
    model, meta = checkpoints.restore_model(epoch, init_state(experiment))
  finally:
    checkpoints.close()
  export = config.averaging.get("export", "raw")
  params = averaging.select_params(model["params"], model["averages"], export)
  batch_stats = model["batch_stats"]
  if export != "raw" and jax.tree.leaves(batch_stats):
    batch_stats = averaging.recompute_batch_stats(experiment.model, params, batch_stats,
                                                  experiment.dataset.x_train)
  return {"params": params, "batch_stats": batch_stats, "epoch": epoch,
          "val_accuracy": meta.get("val_accuracy")}
