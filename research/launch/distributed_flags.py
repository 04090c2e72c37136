"""The flags that make one run of several processes (hosts), shared by every entry point.

``run`` (``research.launch.entry``) joins the processes before ``main()``, so every script that
trains runs unchanged on N processes::

    # 2 processes on this machine (e.g. 2 CPU processes, or 2 GPUs with one process each):
    python scripts/train.py --workdir=runs/two --coordinator_address=127.0.0.1:12345 \\
        --num_processes=2 --process_id=0 &
    python scripts/train.py --workdir=runs/two --coordinator_address=127.0.0.1:12345 \\
        --num_processes=2 --process_id=1

On a TPU pod slice (every host runs the same command) and under ``srun`` (SLURM) or Open MPI no
flag is needed: the settings come from the environment ``jax.distributed.initialize()``
understands. ``--heartbeat_timeout_seconds`` bounds how long the others run on after one process
died (JAX's default, 100 s).
"""
from __future__ import annotations

from absl import flags

from research.launch.errors import fail

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port where process 0 runs the coordinator of a "
    "multi-process run (JAX's distributed runtime); every process passes the same. Default: from "
    "the cluster (TPU pod slice, SLURM srun, Open MPI) or one process.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "How many processes (hosts) train this one run together. Default: from "
    "the cluster, or 1.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index, 0 .. --num_processes - 1 (0 writes the records). "
    "Default: from the cluster, or 0.")
_HEARTBEAT = flags.DEFINE_integer(
    "heartbeat_timeout_seconds", 100, "In a multi-process run, the seconds after which the "
    "processes stop (with JAX's 'Terminating process because the JAX distributed service "
    "detected fatal errors') when one of them died or hangs.")


#: Listed in the ``--help`` of every script with a ``--config``.
NAMES = ("coordinator_address", "num_processes", "process_id", "heartbeat_timeout_seconds")


def requested() -> bool:
  """Whether the command line asks for several processes (``--num_processes`` above 1 or a
  ``--coordinator_address``)."""
  return (_NUM_PROCESSES.value is not None and _NUM_PROCESSES.value > 1) or bool(
      _COORDINATOR.value)


def detected_cluster() -> str | None:
  """The multi-process cluster this process was started in (``slurm``, ``ompi``, a TPU slice),
  as JAX would detect it; None when there is none (JAX is imported only when the environment
  hints at one)."""
  from research.train import distributed
  return distributed.detected_cluster() if distributed.cluster_hinted() else None


def initialize() -> bool:
  """Joins the processes named by the flags or the cluster environment
  (``research.train.distributed.initialize``); returns whether this is a multi-process run.

  A bad value, or processes that cannot reach each other, end the program with one line (exit 1).
  """
  settings = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from research.train import distributed   # JAX is loaded only now, after the flags
  try:
    distributed.check_settings(*settings, heartbeat_timeout_s=_HEARTBEAT.value)
  except ValueError as e:
    fail(str(e))
  try:
    return distributed.initialize(*settings, heartbeat_timeout_s=_HEARTBEAT.value)
  except Exception as e:  # noqa: BLE001 - JAX raises several kinds; said in one line
    fail(f"could not join the processes of this run (coordinator "
         f"{settings[0] or 'from the cluster environment'}, {settings[1] or '?'} processes, "
         f"this one {settings[2] if settings[2] is not None else '?'}): "
         f"{type(e).__name__}: {e}")
