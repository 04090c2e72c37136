"""Exit statuses and the one-line error of every entry point.

Every script in ``scripts/`` ends with one of these statuses:

* 0 (``EXIT_OK``): done;
* 1 (``EXIT_USER_ERROR``): a mistake of the user's (a bad config value, flag, path or argument):
  one line on stderr naming the bad value and what is allowed, no traceback, nothing written;
* 2 (``EXIT_FAILED``): the run itself says no: training diverged, a gradient or sanity check
  failed;
* 130 (``EXIT_INTERRUPTED``): stopped by Ctrl-C or SIGTERM (what was finished is kept).
"""
from __future__ import annotations

import os
import sys
from typing import NoReturn

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_FAILED = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
  """A user's mistake, reported as one line (``<script>: error: <message>``) with exit status 1."""


def program_name() -> str:
  return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "trainlab"


def error_line(message: str) -> str:
  """``<script>: error: <message>`` on one line (newlines in the message become '; ')."""
  text = "; ".join(part.strip() for part in str(message).strip().splitlines() if part.strip())
  return f"{program_name()}: error: {text}"


def fail(message: str) -> NoReturn:
  """Prints ``message`` as one error line on stderr and exits with status 1."""
  print(error_line(message), file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)
