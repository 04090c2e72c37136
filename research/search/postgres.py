"""A throwaway PostgreSQL server: a search store for tests, benchmarks and one machine's workers.

    with PostgresServer() as server:              # initdb + pg_ctl start on a free local port
      url = server.create_database("search")      # postgresql+psycopg://postgres@127.0.0.1:P/search
      ...                                         # config.search.storage = url
    # stopped, its data directory removed

The server runs the installed PostgreSQL binaries (``initdb``, ``pg_ctl``: ``$TRAINLAB_PG_BIN``,
else the newest ``/usr/lib/postgresql/<version>/bin``, else ``PATH``). PostgreSQL refuses to run
as root, so when this process is root the server runs as the ``postgres`` user, with its data
in a fresh directory under the system temp dir owned by that user. It listens on 127.0.0.1 only,
with ``trust`` authentication (no password): a server for this machine, not a shared one.
``scripts/postgres_server.py`` starts one from the command line.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

BIN_ENV = "TRAINLAB_PG_BIN"
SERVER_USER = "postgres"
SUPERUSER = "postgres"
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
  """The PostgreSQL binaries or the Python driver are missing (the message says what to install)."""


def _version_key(path: str) -> tuple:
  version = os.path.basename(os.path.dirname(path))
  return tuple(int(p) if p.isdigit() else 0 for p in version.split("."))


def find_bin_dir() -> str | None:
  """The folder with ``initdb`` and ``pg_ctl`` (module doc), or None."""
  candidates = []
  if os.environ.get(BIN_ENV):
    candidates.append(os.environ[BIN_ENV])
  candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
  initdb = shutil.which("initdb")
  if initdb:
    candidates.append(os.path.dirname(initdb))
  for folder in candidates:
    if all(os.access(os.path.join(folder, b), os.X_OK) for b in ("initdb", "pg_ctl")):
      return folder
  return None


def unavailable_reason() -> str | None:
  """Why a throwaway server cannot start here (binaries, user or driver missing), or None."""
  if find_bin_dir() is None:
    return ("PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL (Debian: "
            f"apt-get install postgresql) or point ${BIN_ENV} at its bin folder")
  if os.geteuid() == 0:
    try:
      pwd.getpwnam(SERVER_USER)
    except KeyError:
      return (f"running as root, and there is no {SERVER_USER!r} user to run PostgreSQL as "
              "(it refuses root)")
  try:
    import psycopg  # noqa: F401
  except ImportError:
    return "the psycopg driver is not installed: pip install 'trainlab[postgres]'"
  return None


def free_port() -> int:
  """A TCP port on 127.0.0.1 that is free now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class PostgresServer:
  """A PostgreSQL server in a temporary (or given) data directory; see the module doc.

  Args:
    port: TCP port on 127.0.0.1 (0: a free one).
    data_dir: keep the data here (created by ``initdb`` when empty, reused otherwise); default: a
      temporary directory removed by :meth:`stop`.
    durable: False turns off ``fsync`` (faster; a crash of the machine may lose the data: for
      tests).
  """

  def __init__(self, port: int = 0, data_dir: str | None = None, durable: bool = True):
    self.port = int(port) or free_port()
    self.durable = bool(durable)
    # The run folder (socket, log; the data too unless data_dir is given) is removed by stop().
    self.root = tempfile.mkdtemp(prefix="trainlab-pg-")
    self.data_dir = os.path.join(self.root, "data") if data_dir is None else os.path.abspath(
        data_dir)
    self.log_file = os.path.join(self.root, "postgres.log")
    self.bin_dir = find_bin_dir()
    self.running = False

  # -- processes ---------------------------------------------------------------------------
  def _as_server_user(self) -> dict[str, Any]:
    """``subprocess`` arguments that run a command as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
      return {}
    entry = pwd.getpwnam(SERVER_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
            "env": dict(os.environ, HOME=entry.pw_dir, USER=SERVER_USER)}

  def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
    result = subprocess.run([os.path.join(self.bin_dir, args[0]), *args[1:]], capture_output=True,
                            text=True, timeout=timeout, cwd=self.root, **self._as_server_user())
    if result.returncode != 0:
      output = (result.stderr or result.stdout).strip().splitlines()
      raise RuntimeError(f"{args[0]} failed (exit {result.returncode}): "
                         + (output[-1] if output else "no output") + f"; log: {self.log_file}")

  def _chown(self, path: str) -> None:
    if os.geteuid() == 0:
      entry = pwd.getpwnam(SERVER_USER)
      os.chown(path, entry.pw_uid, entry.pw_gid)

  def start(self) -> "PostgresServer":
    """initdb (when the data directory is new), then ``pg_ctl start`` and wait until it accepts
    connections.

    Raises:
      PostgresUnavailable: binaries, user or driver missing.
      RuntimeError: initdb or the server failed (the message has the last line of its output).
    """
    reason = unavailable_reason()
    if reason:
      raise PostgresUnavailable(reason)
    self._chown(self.root)
    if not os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
      os.makedirs(self.data_dir, exist_ok=True)
      self._chown(self.data_dir)
      self._run("initdb", "-D", self.data_dir, "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                "--locale=C", "--no-sync", "--no-instructions")
    settings = [f"-p {self.port}", "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}", "-c max_connections=200"]
    if not self.durable:
      settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    self._run("pg_ctl", "-D", self.data_dir, "-l", self.log_file, "-w", "-t",
              str(START_TIMEOUT_S), "-o", " ".join(settings), "start")
    self.running = True
    return self

  def stop(self) -> None:
    """Stops the server (fast shutdown) and removes its run folder (with the data, unless a
    ``data_dir`` was given)."""
    if self.running:
      try:
        self._run("pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop")
      except (RuntimeError, subprocess.TimeoutExpired):
        self._run("pg_ctl", "-D", self.data_dir, "-m", "immediate", "-w", "stop")
      self.running = False
    shutil.rmtree(self.root, ignore_errors=True)

  def __enter__(self) -> "PostgresServer":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()

  # -- databases ---------------------------------------------------------------------------
  def url(self, database: str = "postgres") -> str:
    """The SQLAlchemy URL of ``database`` on this server (psycopg 3 driver, no password)."""
    return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

  def create_database(self, name: str) -> str:
    """Creates database ``name`` (if absent); returns its URL."""
    import psycopg
    from psycopg import sql
    deadline = time.time() + 10
    while True:
      try:
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
          exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
          if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)
      except psycopg.OperationalError:
        if time.time() > deadline:
          raise
        time.sleep(0.2)
