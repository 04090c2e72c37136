"""Ctrl-C / SIGTERM acted on between operations instead of inside them.

Every entry point turns SIGTERM into ``KeyboardInterrupt`` (``entry.run``), raised wherever the
main thread happens to be. Inside a store transaction that is harmful: measured on the search
master (SQLite store, SIGTERM at a random moment of enqueueing, 40 tries), 5 masters hung, because
the interrupted connection kept the database's write lock and the master's own clean-up write
(clearing its stamp) then waited 120 s for it; once the interrupt was raised inside a garbage
collector callback, where Python drops it ("Exception ignored"), and the master ran on.

Within :func:`deferred_stop` the first SIGINT / SIGTERM is only recorded; the code raises it at
points where nothing is half done (``Stop.check``), and on leaving the block. A second signal
stops at once (the old behaviour: for a master stuck in a call that does not return).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop:
  """The signals received in a :func:`deferred_stop` block."""

  def __init__(self) -> None:
    self.received: list[int] = []

  @property
  def requested(self) -> bool:
    return bool(self.received)

  def check(self) -> None:
    """Raises ``KeyboardInterrupt`` once a stop was requested (call it between operations)."""
    if self.received:
      raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_stop() -> Iterator[Stop]:
  """SIGINT and SIGTERM, within the block, are recorded in the yielded :class:`Stop` and raised
  as ``KeyboardInterrupt`` by ``Stop.check`` or on leaving the block; a second one raises at once.
  The previous handlers are restored on leaving. Outside the main thread (where Python delivers
  no signals) the block changes nothing and ``check`` never raises."""
  stop = Stop()
  if threading.current_thread() is not threading.main_thread():
    yield stop
    return

  def record(signum, frame):
    del frame
    stop.received.append(signum)
    if len(stop.received) > 1:
      raise KeyboardInterrupt

  previous = {sig: signal.signal(sig, record) for sig in SIGNALS}
  try:
    yield stop
  finally:
    for sig, handler in previous.items():  # None: a handler not set from Python
      signal.signal(sig, signal.SIG_DFL if handler is None else handler)
  stop.check()  # a stop asked for after the last check (not reached when the block raised)
