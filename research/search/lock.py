"""One master per search: a lock file in the search dir and a stamp in the store.

* ``<search_dir>/master.lock`` holds ``host:pid`` of the running master and an exclusive
  ``flock`` on it for as long as that process lives: the kernel drops the lock when the process
  dies, however it dies, so the lock of a dead master is taken over by the next one (which says
  so). On a filesystem without ``flock`` the file's ``host:pid`` decides: a dead pid on this host
  is taken over, a live one or another host's refuses.
* The search's study in the store gets the user attribute ``master = {id, dir, beat}``, refreshed
  by the running master every ``heartbeat_s``: a second master on another machine, or in another
  search dir on the same store, is refused while that stamp is younger than ``grace_s`` (and on
  this host, while its pid lives). A clean exit clears it.

A refused master raises :class:`SearchLocked` (one line: who holds the search and how to go on).
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from typing import Any

from research.search import study as study_lib
from research.search.journal import NO_FLOCK

LOCK_FILE = "master.lock"
STAMP = "master"


class SearchLocked(RuntimeError):
  """Another master runs this search."""


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip() or "unknown"
  except OSError:
    return "unknown"


def _alive_here(holder: str) -> bool | None:
  """True/False for a ``host:pid`` of this host, None for another host's (cannot tell)."""
  host, _, pid = holder.rpartition(":")
  if host != socket.gethostname() or not pid.isdigit():
    return None
  return int(pid) == os.getpid() or study_lib.pid_alive(int(pid))


class MasterLock:
  """The lock file of a search dir (module doc). ``acquire`` returns the dead holder it took
  over (None when the lock was free)."""

  def __init__(self, search_dir: str):
    self.path = os.path.join(os.path.abspath(search_dir), LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> str | None:
    """Takes the lock.

    Raises:
      SearchLocked: a live master holds it.
    """
    me = study_lib.worker_id()
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise SearchLocked(
          f"the search dir {os.path.dirname(self.path)} is in use by the master "
          f"{_holder(self.path)}; stop that master first (Ctrl-C; the same command continues "
          f"the search), or if it is dead on another machine, delete {self.path}") from None
    except OSError as err:
      if err.errno not in NO_FLOCK:
        os.close(fd)
        raise
      # No flock on this filesystem: the recorded host:pid decides.
      holder = _holder(self.path)
      if holder not in ("unknown", me) and _alive_here(holder) is not False:
        os.close(fd)
        raise SearchLocked(
            f"the search dir {os.path.dirname(self.path)} is in use by the master {holder} "
            f"(lock {self.path}, no flock on this filesystem); if that master is dead, delete "
            "the lock file and run again") from None
    previous = _holder(self.path)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{me}\n".encode(), 0)
    self._fd = fd
    return None if previous in ("unknown", me) else previous

  def release(self) -> None:
    """Releases the lock (the file stays, empty, for the next master)."""
    if self._fd is None:
      return
    try:
      os.ftruncate(self._fd, 0)
    except OSError:
      pass
    os.close(self._fd)  # drops the flock
    self._fd = None


def check_stamp(study: Any, search_dir: str, grace_s: float) -> None:
  """Refuses when another live master runs this search (the store stamp, module doc).

  Raises:
    SearchLocked: another master's stamp is fresh (and, on this host, its pid lives).
  """
  stamp = study.user_attrs.get(STAMP)
  if not stamp or stamp.get("id") == study_lib.worker_id():
    return
  age = time.time() - float(stamp.get("beat", 0.0))
  alive = _alive_here(stamp["id"])
  if alive is False or age > grace_s:
    return
  raise SearchLocked(
      f"search {study.study_name!r} in this store is run by the master {stamp['id']} (search dir "
      f"{stamp.get('dir')}, last seen {age:.0f}s ago); stop that master first"
      + ("" if alive else f", or if it is dead run again in {grace_s - age:.0f}s "
         "(config.search.grace_s after its last sign of life)"))


def write_stamp(study: Any, search_dir: str) -> None:
  """Records (or refreshes) this process as the search's master."""
  study.set_user_attr(STAMP, {"id": study_lib.worker_id(), "dir": os.path.abspath(search_dir),
                              "beat": time.time()})


def clear_stamp(study: Any) -> None:
  study.set_user_attr(STAMP, None)
