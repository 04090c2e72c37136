"""research.launch.signals: Ctrl-C / SIGTERM recorded inside a block and raised between
operations (real signals sent to this process)."""
import os
import signal
import threading

import pytest

from research.launch import signals


def _raise_interrupt(signum, frame):
  raise KeyboardInterrupt


@pytest.fixture
def entry_handler():
  """SIGTERM handled as every entry point handles it (research.launch.entry), restored after."""
  previous = signal.signal(signal.SIGTERM, _raise_interrupt)
  yield
  signal.signal(signal.SIGTERM, previous)


def test_a_signal_is_raised_at_the_next_check_not_where_it_lands(entry_handler):
  done = []
  with pytest.raises(KeyboardInterrupt):
    with signals.deferred_stop() as stop:
      os.kill(os.getpid(), signal.SIGTERM)
      done.append("the operation under way finished")  # not cut by the signal
      assert stop.requested and stop.received == [signal.SIGTERM]
      stop.check()
      done.append("the next operation")
  assert done == ["the operation under way finished"]
  assert signal.getsignal(signal.SIGTERM) is _raise_interrupt  # restored


def test_a_signal_after_the_last_check_is_raised_on_leaving_the_block(entry_handler):
  with pytest.raises(KeyboardInterrupt):
    with signals.deferred_stop() as stop:
      stop.check()
      os.kill(os.getpid(), signal.SIGINT)


def test_a_second_signal_stops_at_once(entry_handler):
  reached = []
  with pytest.raises(KeyboardInterrupt):
    with signals.deferred_stop():
      os.kill(os.getpid(), signal.SIGTERM)
      reached.append(1)
      os.kill(os.getpid(), signal.SIGTERM)
      reached.append(2)
  assert reached == [1]


def test_without_a_signal_nothing_is_raised(entry_handler):
  with signals.deferred_stop() as stop:
    stop.check()
  assert not stop.requested


def test_outside_the_main_thread_the_block_changes_nothing(entry_handler):
  seen = []

  def run():
    with signals.deferred_stop() as stop:
      seen.append(signal.getsignal(signal.SIGTERM) is _raise_interrupt)
      stop.check()

  thread = threading.Thread(target=run)
  thread.start()
  thread.join()
  assert seen == [True]
