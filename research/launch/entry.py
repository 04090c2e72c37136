"""``run(main)``: how every entry point in ``scripts/`` starts and ends (one shared path).

* flags are parsed by absl (``--help`` lists them; ``--helpfull`` adds absl's own, such as
  ``--verbosity``);
* a positional argument (e.g. a forgotten ``--``) is a user error;
* logging: absl WARNING by default, so orbax's per-save INFO lines and JAX's "Unable to
  initialize backend" lines stay out of the way; ``--verbosity=0`` (INFO) or ``1`` (DEBUG) shows
  them;
* ``--print_config`` prints the resolved config and exits;
* several processes (hosts) join as one run before ``main`` (``--coordinator_address``,
  ``--num_processes``, ``--process_id``, or the cluster's environment: TPU pod slice, SLURM
  ``srun``, Open MPI; see :mod:`research.launch.distributed_flags`); process 0 alone prints;
* JAX's persistent compilation cache is on (``$TRAINLAB_COMPILATION_CACHE``, default
  ``~/.cache/trainlab/jax``; ``off`` disables it): a second run of a config compiles nothing;
* ``main`` validates everything first (:func:`validated`) and raises :class:`UserError` (or lets a
  ``ValueError`` escape from :func:`validated`) for a user's mistake: one line, exit status 1, no
  traceback; Ctrl-C / SIGTERM end with status 130.
"""
from __future__ import annotations

import logging as std_logging
import os
import signal
import sys
from typing import Any, Callable, Sequence, TypeVar

from absl import app, flags, logging

from research.launch import config_flags, distributed_flags
from research.launch.errors import EXIT_INTERRUPTED, UserError, error_line, fail

T = TypeVar("T")

#: Loggers of libraries that talk at INFO about routine work.
_CHATTY_LOGGERS = ("absl", "orbax", "jax._src.xla_bridge", "jax._src.compiler", "optuna")


def quiet_logging() -> None:
  """absl WARNING unless ``--verbosity`` was given on the command line."""
  verbosity = flags.FLAGS["verbosity"]
  if verbosity.present:
    return
  logging.set_verbosity(logging.WARNING)
  for name in _CHATTY_LOGGERS:
    std_logging.getLogger(name).setLevel(std_logging.WARNING)


def validated(check: Callable[..., T], *args: Any, **kwargs: Any) -> T:
  """``check(*args, **kwargs)``, with a ``ValueError`` it raises turned into a :class:`UserError`
  (one line, exit 1). Use it for every validation before anything runs or is written."""
  try:
    return check(*args, **kwargs)
  except ValueError as e:
    raise UserError(str(e)) from None


def checked_workdir(path: str | None, flag: str = "--workdir") -> str:
  """``path`` made absolute, or a :class:`UserError` when it cannot be a run directory: empty, an
  existing file, or under a directory this process cannot write (nothing is created here)."""
  if path is None or not str(path).strip():
    raise UserError(f"{flag} is empty; pass a directory, e.g. {flag}=runs/my_run")
  path = os.path.abspath(os.path.expanduser(str(path)))
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f"{flag}={path} is a file, not a directory; choose another {flag}")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise UserError(f"{flag}={path}: {existing} is a file, so the directory cannot be made")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise UserError(f"{flag}={path}: {existing} is not writable; choose another {flag}")
  return path


#: Said to a one-process script started as several processes.
MULTIPROCESS_SCRIPTS = ("the scripts that train (train, ablate, ensemble, sanity, gradcheck, "
                        "second_order, reproduce) run on several processes (hosts)")


def _interrupt(signum, frame):
  # A scheduler's SIGTERM runs the same cleanup as Ctrl-C (finally blocks, stopping workers).
  del signum, frame
  raise KeyboardInterrupt


def _one_voice() -> None:
  """In a run of several processes, process 0 alone prints (the others compute the same run):
  their standard output goes nowhere; their errors still reach standard error."""
  import jax
  if jax.process_index() != 0:
    sys.stdout = open(os.devnull, "w")   # for the rest of the process


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag (unknown, or a value of the wrong type) reported as one
  error line and exit 1 instead of absl's two-line FATAL message."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e}; see --help")
  except SystemExit as e:
    # absl prints --help and exits with 1, the status of a user mistake here: asking for help
    # is not one.
    asked = {"--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml"} & set(argv[1:])
    raise SystemExit(0 if asked and e.code == 1 else e.code) from None


def run(main: Callable[..., int | None], *, config: Any = None,
        positional: str | None = None, multiprocess: bool = False,
        independent_copies: bool = False) -> None:
  """Runs ``main()`` as an absl program with the project's conventions (module docstring).

  Args:
    main: the script's body; returns its exit status (None means 0).
    config: the ``--config`` flag holder, for ``--print_config``.
    positional: the name of the positional arguments the script takes (e.g. ``"workdirs"``):
      ``main`` is then called with their list; None: positional arguments are a user error.
    multiprocess: the script may run on several processes (hosts) as one run; the others
      refuse it with one line, and refuse to start as one of several tasks of a cluster job
      (SLURM, Open MPI, a TPU slice), where N copies would write the same files at once.
    independent_copies: several copies are meant to run side by side (search workers claiming
      trials from one store): started as several tasks of a cluster job, each runs on its own.
  """

  def absl_main(argv: Sequence[str]) -> int:
    if len(argv) > 1 and positional is None:
      fail(f"unexpected argument(s) {' '.join(argv[1:])!r}: this script takes only --flags "
           "(see --help)")
    quiet_logging()
    if config is not None and config_flags.print_config_requested():
      print(config.value)
      return 0
    # Before any JAX computation and before our SIGTERM handler.
    if multiprocess:
      if distributed_flags.initialize():
        _one_voice()
    elif distributed_flags.requested():
      fail(f"this script runs in one process; {MULTIPROCESS_SCRIPTS}")
    elif not independent_copies and (cluster := distributed_flags.detected_cluster()) is not None:
      # N copies of a one-process script would write the same files at once.
      fail(f"this script runs in one process, but it was started as one of several processes of "
           f"a {cluster} job; start it as a single task (e.g. srun --ntasks=1); "
           f"{MULTIPROCESS_SCRIPTS}")
    signal.signal(signal.SIGTERM, _interrupt)
    enable_compilation_cache()
    try:
      status = main(list(argv[1:])) if positional is not None else main()
    except UserError as e:
      print(error_line(str(e)), file=sys.stderr, flush=True)
      return 1
    except KeyboardInterrupt:
      return EXIT_INTERRUPTED
    return 0 if status is None else int(status)

  app.run(absl_main, flags_parser=_parse_flags)


COMPILATION_CACHE_ENV = "TRAINLAB_COMPILATION_CACHE"


def compilation_cache_dir() -> str | None:
  """Where JAX's persistent compilation cache lives: ``$TRAINLAB_COMPILATION_CACHE`` (``off``
  disables it), else ``$XDG_CACHE_HOME/trainlab/jax`` (default ``~/.cache/trainlab/jax``)."""
  setting = os.environ.get(COMPILATION_CACHE_ENV, "").strip()
  if setting.lower() in ("off", "0", "none", "false"):
    return None
  if setting:
    return os.path.abspath(os.path.expanduser(setting))
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "trainlab", "jax")


def enable_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache (every program, however quick to compile), so a
  second run of the same config starts training at once; returns its folder (None when off or
  when it cannot be created: the run goes on without it)."""
  directory = compilation_cache_dir()
  if directory is None:
    return None
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError:
    return None
  import jax
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory
