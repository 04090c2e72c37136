r"""A throwaway PostgreSQL server on this machine, as the store of a search.

    python3 scripts/postgres_server.py                       # a free port, data in a temp dir
    python3 scripts/postgres_server.py --port=5433 --data_dir=/tmp/pg_search   # kept, reusable

Prints the store URL (``postgresql+psycopg://postgres@127.0.0.1:<port>/<database>``) and the
search command that uses it, then runs until Ctrl-C / SIGTERM, when it stops the server (and
removes a temporary data dir). It runs the installed PostgreSQL binaries (``initdb``/``pg_ctl``;
as the ``postgres`` user when started as root) and listens on 127.0.0.1 only, without password:
for the workers of this machine. For several machines, use a real PostgreSQL server.
See research/search/README.md.
"""
from __future__ import annotations

import os
import time

from absl import flags

from research import launch

_PORT = flags.DEFINE_integer("port", 0, "TCP port on 127.0.0.1 (0: a free one).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Keep the data here (reused when it holds a "
                                "server's data); '' = a temporary folder, removed at exit.")
_DATABASE = flags.DEFINE_string("database", "search", "Database to create for the search.")


def main() -> int:
  from research.search import postgres
  if not 0 <= _PORT.value < 65536:
    raise launch.UserError(f"--port={_PORT.value} must be in [0, 65535] (0: a free port)")
  if not _DATABASE.value.strip():
    raise launch.UserError("--database is empty; give a database name, e.g. --database=search")
  data_dir = None
  if _DATA_DIR.value:
    data_dir = launch.checked_workdir(_DATA_DIR.value, "--data_dir")
  reason = postgres.unavailable_reason()
  if reason:
    raise launch.UserError(reason)
  server = postgres.PostgresServer(port=_PORT.value, data_dir=data_dir)
  try:
    server.start()
  except RuntimeError as e:
    raise launch.UserError(str(e)) from None
  try:
    url = server.create_database(_DATABASE.value)
    print(f"PostgreSQL {os.path.basename(os.path.dirname(server.bin_dir))} on port "
          f"{server.port}, data in {server.data_dir}", flush=True)
    print(f"store: {url}", flush=True)
    print(f"  python3 scripts/search.py --config.search.storage={url}", flush=True)
    print("Ctrl-C stops the server.", flush=True)
    while True:
      time.sleep(3600)
  finally:
    server.stop()


if __name__ == "__main__":
  launch.run(main)
