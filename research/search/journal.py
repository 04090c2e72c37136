"""The journal store's file lock: ``flock`` on ``<journal>.flock``, dropped by the kernel when its
process dies, however it dies.

Every journal record is appended under a lock. Optuna's own journal locks (a symlink, or a file
created with ``O_EXCL``, next to the journal) are files that exist while the lock is held: a
process SIGKILLed while appending (a worker's heartbeat thread appends twice a second) leaves it
behind, and every other process waits for the lock's grace period (30 s) before breaking it.
Reading takes no lock, so the master meanwhile watched every live worker's heartbeat go stale and
failed (and re-ran) their trials: measured in CI, a killed worker cost three live trials.

``flock`` cannot outlive its process. Where the filesystem has no ``flock`` (``ENOLCK``,
``EOPNOTSUPP``: some NFS set-ups) Optuna's symlink lock is used, and the master's stall rule
(:func:`research.search.study.is_dead`'s ``watched_s``) keeps a stalled store from failing
live trials.
"""
from __future__ import annotations

import errno
import fcntl
import os
import threading
from typing import Callable

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from research.search.study import journal_path

LOCK_SUFFIX = ".flock"
#: errno values of a filesystem without ``flock``.
NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class FlockLock:
  """Optuna's journal lock interface (``acquire`` / ``release``, what ``JournalFileBackend`` calls;
  its base class is private) over ``flock(LOCK_EX)`` on ``<journal>.flock`` (the file stays; the
  lock is the kernel's). Each acquire opens its own descriptor, so two threads of one
  process exclude each other as two processes do."""

  def __init__(self, journal_file: str):
    self.path = journal_file + LOCK_SUFFIX
    self._held = threading.local()

  def __getstate__(self) -> dict:  # a storage sent to another process holds no lock there
    return {"path": self.path}

  def __setstate__(self, state: dict) -> None:
    self.path = state["path"]
    self._held = threading.local()

  def acquire(self) -> bool:
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)  # blocks; EINTR is retried by Python (PEP 475)
    except BaseException:
      os.close(fd)
      raise
    self._held.fd = fd
    return True

  def release(self) -> None:
    fd = getattr(self._held, "fd", None)
    if fd is None:
      raise RuntimeError(f"{self.path}: released without being held")
    self._held.fd = None
    os.close(fd)  # closing the only descriptor drops the flock


def has_flock(journal_file: str) -> bool:
  """Whether the filesystem of ``journal_file`` supports ``flock`` (creates the lock file)."""
  fd = os.open(journal_file + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return True  # another process holds it: supported
  except OSError as err:
    if err.errno in NO_FLOCK:
      return False
    raise
  finally:
    os.close(fd)
  return True


def journal_lock(journal_file: str) -> FlockLock | JournalFileSymlinkLock:
  """The journal's lock: :class:`FlockLock`, Optuna's symlink lock where the filesystem has no
  ``flock``."""
  return (FlockLock(journal_file) if has_flock(journal_file)
          else JournalFileSymlinkLock(journal_file))


def journal_backend(journal_file: str) -> JournalFileBackend:
  """Optuna's journal file backend with :func:`journal_lock`."""
  return JournalFileBackend(journal_file, lock_obj=journal_lock(journal_file))


def lock_probe(url: str) -> Callable[[], None]:
  """For a ``journal:`` store URL, a function that takes and drops the journal's lock (the
  master times it to tell a stalled store: :func:`research.search.master.watch_stage`); a no-op
  for SQL stores, whose locks die with their connection."""
  path = journal_path(url)
  if path is None:
    return lambda: None
  lock = journal_lock(path)

  def probe() -> None:
    lock.acquire()
    lock.release()

  return probe
