"""One run over several processes (hosts): JAX's multi-controller runtime, ``jax.distributed``.

Every process runs the same program on its own devices; ``jax.distributed.initialize`` joins them
(a coordinator on process 0, heartbeats, a key-value store) and then ``jax.devices()`` lists the
devices of every process, so one ``Mesh`` spans them all and one compiled step runs on all of them
(the gradient all-reduce crosses hosts: NCCL on GPUs, ICI/DCN on TPUs, gloo on CPUs).

* :func:`initialize`: joins the processes named by ``coordinator_address`` / ``num_processes`` /
  ``process_id``, or those of the cluster ``jax.distributed.initialize()`` detects by itself (a
  TPU pod slice, ``srun`` under SLURM, Open MPI) when it holds more than one process; otherwise
  nothing happens and the run is a single process, as before. Must run before any JAX
  computation: ``research.launch.run`` calls it before a script's ``main``.
* :func:`is_main`: process 0, the one that writes records, figures, the verdict and the summary.
* :func:`agreed` / :func:`decide`: a decision taken once, on process 0, and handed to every
  process (divergence, early stop, which checkpoints to delete or restore), so no process takes
  another branch and waits forever in a collective the others never enter.

A process that dies (or hangs) is detected by the coordinator's heartbeats: after
``heartbeat_timeout_s`` seconds the others stop with JAX's message ``Terminating process because
the JAX distributed service detected fatal errors`` (status 134, SIGABRT); when process 0 (the
coordinator) dies, the others stop at once. With one process every function here is the
identity and touches no device.
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Callable

import numpy as np

#: JAX's own defaults (``jax.distributed.initialize``).
HEARTBEAT_TIMEOUT_S = 100
INITIALIZATION_TIMEOUT_S = 300

_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(\d{1,5})$")
#: JAX's cluster environments looked for at every start: SLURM (srun), Open MPI, TPU slices on GCE
#: and GKE. Kubernetes and mpi4py are left out (JAX's checks for them may query an API server or
#: warn in every pod); there, pass the flags or set JAX_COORDINATOR_ADDRESS.
DETECTED_CLUSTERS = ("slurm", "ompi", "gcetpu", "gketpu")


def check_settings(coordinator_address: str | None, num_processes: int | None,
                   process_id: int | None, heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S) -> None:
  """Raises ValueError naming a bad value: an address that is not ``host:port``, a process
  count below 1, a process id outside ``[0, num_processes)``, a heartbeat timeout below 1 s."""
  if coordinator_address is not None:
    match = _ADDRESS.match(str(coordinator_address))
    if not match or not 0 < int(match.group(2)) < 65536:
      raise ValueError(f"--coordinator_address={coordinator_address!r} must be host:port of "
                       "process 0 (e.g. 10.0.0.2:12345), with a port in 1..65535.")
  if num_processes is not None and int(num_processes) < 1:
    raise ValueError(f"--num_processes={num_processes} must be >= 1.")
  if process_id is not None:
    if int(process_id) < 0:
      raise ValueError(f"--process_id={process_id} must be >= 0 (process 0 is the coordinator).")
    if num_processes is not None and int(process_id) >= int(num_processes):
      raise ValueError(f"--process_id={process_id} must be below --num_processes="
                       f"{num_processes} (ids run from 0 to {int(num_processes) - 1}).")
  if int(heartbeat_timeout_s) < 1:
    raise ValueError(f"--heartbeat_timeout_seconds={heartbeat_timeout_s} must be >= 1.")


#: Environment variables (prefixes) and device files of the clusters JAX detects; without any of
#: them there is no cluster to ask about, and JAX is not even imported (a finished run is said at
#: once).
_CLUSTER_HINTS = ("SLURM_", "OMPI_", "TPU_", "CLOUD_TPU", "MEGASCALE_")
_TPU_DEVICE_FILES = ("/dev/accel0", "/dev/vfio/0")


def cluster_hinted() -> bool:
  """Whether this process may be part of a cluster JAX detects (a cheap look at the environment
  and the device files, before asking JAX)."""
  return (any(name.startswith(_CLUSTER_HINTS) for name in os.environ)
          or any(os.path.exists(path) for path in _TPU_DEVICE_FILES))


def detected_cluster() -> str | None:
  """The cluster that ``jax.distributed.initialize()`` would read its settings from (one of
  :data:`DETECTED_CLUSTERS`) when it holds more than one process; None otherwise.

  It asks JAX's own cluster detection, so what counts as SLURM or a TPU slice is what JAX reads.
  """
  try:
    from jax._src import clusters  # JAX's detection (no public listing of it exists)
    candidates = list(clusters.ClusterEnv._cluster_types)
  except (ImportError, AttributeError):
    return None
  for env in candidates:
    if getattr(env, "name", "") not in DETECTED_CLUSTERS:
      continue
    try:
      if env.is_env_present() and int(env.get_process_count()) > 1:
        return env.name
    except Exception:  # noqa: BLE001 - a half-configured environment is not ours to judge
      continue
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *,
               heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S,
               initialization_timeout_s: int = INITIALIZATION_TIMEOUT_S) -> bool:
  """Joins the processes of one run (``jax.distributed.initialize``); returns whether it did.

  Settings left None come from the cluster environment JAX detects (:func:`detected_cluster`;
  ``$JAX_COORDINATOR_ADDRESS`` counts as a setting); with no setting given and no multi-process
  cluster detected, nothing happens (one process).
  Must run before any JAX computation (``research.launch.run`` calls it before ``main``).

  Raises:
    ValueError: a bad setting (:func:`check_settings`).
  """
  check_settings(coordinator_address, num_processes, process_id, heartbeat_timeout_s)
  given = any(v is not None for v in (coordinator_address, num_processes, process_id,
                                      os.environ.get("JAX_COORDINATOR_ADDRESS")))
  if not given and (not cluster_hinted() or detected_cluster() is None):
    return False
  if num_processes is not None and int(num_processes) == 1 and process_id in (None, 0):
    return False
  import jax
  # CPU processes exchange their collectives through gloo (TCP); GPUs and TPUs ignore this.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # JAX's preemption notifier would take SIGTERM over; ours ends the run as interrupted (130).
  jax.config.update("jax_enable_preemption_service", False)
  jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=None if num_processes is None else int(num_processes),
      process_id=None if process_id is None else int(process_id),
      initialization_timeout=int(initialization_timeout_s),
      heartbeat_timeout_seconds=int(heartbeat_timeout_s))
  logging.getLogger(__name__).info("process %d of %d joined", jax.process_index(),
                                   jax.process_count())
  return True


def is_main() -> bool:
  """Whether this is process 0 (always, with one process)."""
  import jax
  return jax.process_index() == 0


def _bucket(size: int) -> int:
  # Few distinct shapes, hence few compiled broadcasts: sizes round up to a power of two.
  return max(256, 1 << (max(size, 1) - 1).bit_length())


def agreed(value: Any) -> Any:
  """Process 0's ``value`` on every process (a JSON value: None, bool, number, str, list, dict
  with str keys; floats exactly, NaN and infinities included); ``value`` itself with one process.

  A collective: every process must call it, in the same order.
  """
  import jax
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils
  data = json.dumps(value).encode() if jax.process_index() == 0 else b""
  size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
  padded = np.zeros(_bucket(size), np.uint8)
  padded[:len(data)] = np.frombuffer(data, np.uint8)
  received = np.asarray(multihost_utils.broadcast_one_to_all(padded), np.uint8)
  return json.loads(received[:size].tobytes().decode())


def decide(decision: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
  """``decision(*args, **kwargs)`` run on process 0 only, its (JSON) result on every process.

  For what must be decided once: a look at shared files (checkpoint checksums), a deletion or a
  move done by process 0 before the others go on (they wait in the broadcast until it is done).
  An exception on process 0 is handed over too and raised on every process with the same
  message (as a ``CheckpointError``, ``ResumeError``, ``ValueError`` when it was one, else as a
  ``RuntimeError``).
  """
  import jax
  if jax.process_count() == 1:
    return decision(*args, **kwargs)
  outcome = None
  if jax.process_index() == 0:
    try:
      outcome = {"value": decision(*args, **kwargs)}
    except Exception as e:  # noqa: BLE001 - re-raised on every process below
      outcome = {"error": str(e), "type": type(e).__name__}
      error = e
  outcome = agreed(outcome)
  if "error" in outcome:
    if jax.process_index() == 0:
      raise error
    raise _raised(outcome["type"], outcome["error"])
  return outcome["value"]


def _raised(type_name: str, message: str) -> Exception:
  """The exception process 0 raised, rebuilt on another process (project errors by name)."""
  from research.train import checkpoints, resume
  known = {"CheckpointError": checkpoints.CheckpointError, "ResumeError": resume.ResumeError,
           "ValueError": ValueError, "FileNotFoundError": FileNotFoundError}
  return known.get(type_name, RuntimeError)(message)


def barrier(name: str) -> None:
  """Waits until every process reaches ``barrier(name)`` (nothing with one process)."""
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


class Muted:
  """Stands in for an object whose methods only write (the metrics writer) on processes other
  than 0: every method call does nothing."""

  def __getattr__(self, name: str) -> Callable[..., None]:
    return lambda *args, **kwargs: None
