r"""A search worker: keeps taking trials from the shared store and training them.

    python scripts/search_worker.py --storage=sqlite:////tmp/search_digits/study.db \
        --search=search_digits [--search_dir=/tmp/search_digits] [--population=4]

The master (scripts/search.py) starts local workers itself and prints this command for other
machines; the store (``--storage``: sqlite:///..., postgresql://..., journal:<path>) and the
search dir must be reachable from there. The worker checks everything first (the store exists,
the search is in it, its config is valid): a problem is one line on stderr and exit status 1.
It exits when the master marks the search finished (or after --idle_timeout seconds with
nothing to do); Ctrl-C / SIGTERM stop it (status 130) and the master fails and retries the trial
it was running. See research/search/README.md.
"""
from __future__ import annotations

from absl import flags

from research import launch

_STORAGE = flags.DEFINE_string("storage", None, "Store URL (as printed by the master).")
_SEARCH = flags.DEFINE_string("search", None, "Search name (config.search.name).")
_SEARCH_DIR = flags.DEFINE_string("search_dir", None, "Search dir (default: the master's).")
_POPULATION = flags.DEFINE_integer("population", 1, "Trials trained at once (jax.vmap).")
_IDLE = flags.DEFINE_float("idle_timeout", 600.0, "Exit after this long with nothing to do.")
_POLL = flags.DEFINE_float("poll", 1.0, "Seconds between looks at an empty queue.")
_EXIT_WHEN_IDLE = flags.DEFINE_bool("exit_when_idle", False,
                                    "Exit as soon as no trial is waiting.")


def _check_flags() -> None:
  for name, flag in (("storage", _STORAGE), ("search", _SEARCH)):
    if not (flag.value or "").strip():
      raise launch.UserError(f"--{name} is required: the master (scripts/search.py) prints the "
                             "worker command with --storage and --search")
  if _POPULATION.value < 1:
    raise launch.UserError(f"--population={_POPULATION.value} must be >= 1")
  for name, flag in (("idle_timeout", _IDLE), ("poll", _POLL)):
    if not flag.value > 0:
      raise launch.UserError(f"--{name}={flag.value} must be > 0 (seconds)")


def main() -> int:
  from research.search import study, worker
  _check_flags()
  url = launch.validated(study.storage_url, _STORAGE.value, _SEARCH_DIR.value or ".")
  handle = launch.validated(worker.open_search, url, _SEARCH.value, _SEARCH_DIR.value)
  ran = worker.serve(url, _SEARCH.value, population=_POPULATION.value, poll_s=_POLL.value,
                     idle_timeout_s=_IDLE.value, exit_when_idle=_EXIT_WHEN_IDLE.value,
                     log=lambda m: print(m, flush=True), handle=handle)
  print(f"[worker] done: {ran} trials", flush=True)
  return launch.EXIT_OK


if __name__ == "__main__":
  launch.run(main, independent_copies=True)   # e.g. srun --ntasks=8: eight workers
