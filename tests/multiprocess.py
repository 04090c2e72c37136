"""Starting a script as several real processes of one ``jax.distributed`` run on 127.0.0.1 (gloo
CPU collectives), as the hosts of a pod slice or the tasks of a SLURM job would run it."""
import os
import socket
import subprocess
import sys
import tempfile

from tests.train_helpers import REPO

#: What gloo prints straight to the standard output of every process (not through Python), one
#: line per local device; two devices' lines may interleave mid-line ("[Gloo] Rank [Gloo] Rank 2
#: is connected ...\n3 is connected ..."), so both markers are looked for.
GLOO = ("[Gloo]", "peer ranks")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env(devices: int, cache) -> dict:
  """This environment with ``devices`` fake CPU devices and the tests' compilation cache."""
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_PLATFORMS="cpu", TRAINLAB_COMPILATION_CACHE=str(cache))


def popen(command, environment):
  # Output to files, not pipes: a process is waited for while the other one writes.
  outputs = (tempfile.TemporaryFile(), tempfile.TemporaryFile())
  proc = subprocess.Popen(command, env=environment, cwd="/", stdout=outputs[0],
                          stderr=outputs[1])
  proc.outputs = outputs
  return proc


def wait(procs, timeout=300):
  """``[(returncode, stdout, stderr)]``; a process still running after ``timeout`` is killed."""
  out = []
  for proc in procs:
    try:
      proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    texts = []
    for stream in proc.outputs:
      stream.seek(0)
      texts.append(stream.read().decode(errors="replace"))
      stream.close()
    out.append((proc.returncode, *texts))
  return out


def start(script: str, args, processes: int, cache, devices: int = 4, per_process=None):
  """``scripts/<script> *args`` as ``processes`` processes sharing ``devices`` fake CPU devices
  (one process: all of them), named by the process flags."""
  command = [sys.executable, os.path.join(REPO, "scripts", script), *args]
  if processes == 1:
    return [popen(command, env(devices, cache))]
  port = free_port()
  return [popen(command + (per_process or {}).get(p, []) + [
      f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}",
      f"--process_id={p}"], env(devices // processes, cache)) for p in range(processes)]


def run(script: str, args, processes: int, cache, devices: int = 4, timeout: int = 300):
  """:func:`start` and :func:`wait`, gloo's lines dropped from the standard outputs."""
  results = wait(start(script, args, processes, cache, devices), timeout)
  return [(code, without_gloo(stdout), stderr) for code, stdout, stderr in results]


def without_gloo(text: str) -> str:
  return "".join(line for line in text.splitlines(keepends=True)
                 if not any(marker in line for marker in GLOO))
