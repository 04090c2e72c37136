r"""A search worker: keeps taking trials from the shared store and training them.

    python scripts/search_worker.py --storage=sqlite:////tmp/search_digits/study.db \
        --search=search_digits [--search_dir=/tmp/search_digits] [--population=4]

The master (scripts/search.py) starts local workers itself and prints this command for other
machines; the store (``--storage``: sqlite:///..., postgresql://..., journal:<path>) and the
search dir must be reachable from there. The worker exits when the master marks the search
finished (or after --idle_timeout seconds with nothing to do).
"""
from __future__ import annotations

import os

from absl import app, flags, logging

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_STORAGE = flags.DEFINE_string("storage", None, "Store URL (as printed by the master).",
                               required=True)
_SEARCH = flags.DEFINE_string("search", None, "Search name (config.search.name).", required=True)
_SEARCH_DIR = flags.DEFINE_string("search_dir", None, "Search dir (default: the master's).")
_POPULATION = flags.DEFINE_integer("population", 1, "Trials trained at once (jax.vmap).")
_IDLE = flags.DEFINE_float("idle_timeout", 600.0, "Exit after this long with nothing to do.")
_POLL = flags.DEFINE_float("poll", 1.0, "Seconds between looks at an empty queue.")
_EXIT_WHEN_IDLE = flags.DEFINE_bool("exit_when_idle", False,
                                    "Exit as soon as no trial is waiting.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
  from research.search import worker
  ran = worker.serve(_STORAGE.value, _SEARCH.value, search_dir=_SEARCH_DIR.value,
                     population=_POPULATION.value, poll_s=_POLL.value,
                     idle_timeout_s=_IDLE.value, exit_when_idle=_EXIT_WHEN_IDLE.value,
                     log=lambda m: print(m, flush=True))
  print(f"[worker] done: {ran} trials", flush=True)


if __name__ == "__main__":
  app.run(main)
