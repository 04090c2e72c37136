"""Shared by the search tests: a throwaway PostgreSQL server, synthetic search configs, processes.

Fixtures (import them into a test module: ``from tests.search_helpers import postgres_url``):

* ``postgres_server`` (session): ``research.search.postgres.PostgresServer`` on a free port
  (``initdb``/``pg_ctl`` as the ``postgres`` user when running as root), torn down at the end;
  tests that use it are skipped, with the reason, where the binaries or the driver are missing.
* ``postgres_url``: a fresh database on that server, as a SQLAlchemy URL.
"""
import itertools
import json
import os
import subprocess
import sys
import time

import ml_collections
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEARCH = os.path.join(ROOT, "scripts", "search.py")
WORKER = os.path.join(ROOT, "scripts", "search_worker.py")
_DATABASES = itertools.count()


@pytest.fixture(scope="session")
def postgres_server():
  from research.search import postgres
  reason = postgres.unavailable_reason()
  if reason:
    pytest.skip(f"needs a PostgreSQL server: {reason}")
  with postgres.PostgresServer(durable=False) as server:
    yield server


@pytest.fixture
def postgres_url(postgres_server):
  return postgres_server.create_database(f"test{os.getpid()}_{next(_DATABASES)}")


def synthetic_config(*, trials=(6,), epochs=(1,), epoch_s=0.0, lr_range=(1e-4, 1e-1),
                     storage="", name="test", **search) -> ml_collections.ConfigDict:
  """A search config over the learning rate, trained by ``research.search.synthetic:train``."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.synthetic = ml_collections.ConfigDict({"epoch_s": float(epoch_s)})
  config.optimizer = ml_collections.ConfigDict({"learning_rate": 1e-3})
  config.train = ml_collections.ConfigDict({"num_epochs": 1})
  config.search = ml_collections.ConfigDict({
      "name": name, "storage": storage, "method": "random", "seed": 0,
      "space": {"learning_rate": {"path": "optimizer.learning_rate", "low": lr_range[0],
                                  "high": lr_range[1], "scale": "log"}},
      "stage_epochs": tuple(epochs), "stage_trials": tuple(trials), "top_k": 2, "pad": 0.1,
      "border_fraction": 0.1, "pruner": "none", "num_workers": 0,
      "trainer": "research.search.synthetic:train", "heartbeat_s": 0.5, "grace_s": 60.0,
      "max_retries": 1})
  config.search.update(search)
  return config


def write_config(config, path) -> str:
  """Writes ``config`` as a JSON config file that ``--config=`` reads; returns the path."""
  with open(path, "w") as f:
    json.dump(config.to_dict(), f)
  return str(path)


def env() -> dict:
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")


def start_master(config_path, search_dir, log_path, *extra) -> subprocess.Popen:
  """``scripts/search.py`` as a separate process, its output in ``log_path``."""
  log = open(log_path, "w")
  return subprocess.Popen([sys.executable, SEARCH, f"--config={config_path}",
                           f"--search_dir={search_dir}", *extra], stdout=log,
                          stderr=subprocess.STDOUT, env=env(), cwd=ROOT)


def wait_for(predicate, timeout, what, poll=0.05):
  """Polls ``predicate()`` until it returns something truthy (returned); fails after
  ``timeout`` seconds naming ``what``."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    value = predicate()
    if value:
      return value
    time.sleep(poll)
  pytest.fail(f"timed out after {timeout}s waiting for {what}")
