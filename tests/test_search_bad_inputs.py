"""Every bad input of scripts/search.py and scripts/search_worker.py: exit status 1 and one line on
stderr naming the value and what is allowed, before anything runs or is written."""
import os
import subprocess
import sys

import pytest

from research.search import master, study as study_lib
from tests.search_helpers import ROOT, SEARCH, WORKER, env, synthetic_config

S = "search.py: error: "
W = "search_worker.py: error: "

# (extra command-line arguments of scripts/search.py, the exact error line); {tmp} is the test's
# temporary folder, {dir} the --search_dir (which must not exist afterwards).
SEARCH_CASES = [
    (["--config.search.space.learning_rate.low=20"],
     S + "search space 'learning_rate': low=20.0 must be < high=10.0."),
    (["--config.search.space.learning_rate.low=0"],
     S + "search space 'learning_rate': low=0.0 must be > 0 on the log scale (use scale='linear' "
     "to include 0)."),
    (["--config.search.space.mu.high=1.0"],
     S + "search space 'mu': high=1.0 must be < 1 on the one_minus_log scale (1 - x is taken on a "
     "log scale)."),
    (["--config.search.space.dropout.scale=cubic"],
     S + "search space 'dropout': scale='cubic' is unknown; known: linear, log, one_minus_log."),
    (["--config.search.space.mu.path=optimizer.muu"],
     S + "search space path 'optimizer.muu': config has no field 'optimizer.muu'."),
    (["--config.search.space.dropout.high=1.5"],
     S + "the trial config with every searched value at its 'high' end is invalid: "
     "config.model.dropout=1.5 is a drop probability: it must be in [0, 1)."),
    (["--config.search.stage_trials=(4,2)"],
     S + "config.search.stage_epochs=(1, 3, 8) and stage_trials=(4, 2) must have the same length "
     "(one entry per stage)"),
    (["--config.search.stage_epochs=(1,0,8)"],
     S + "config.search.stage_epochs=(1, 0, 8) must be a non-empty tuple of integers >= 1, one per "
     "stage"),
    (["--config.search.method=lhs"],
     S + "config.search.method='lhs' is unknown; known: random, grid, halton, sobol"),
    (["--config.search.storage=study"],
     S + "config.search.storage='study' is neither '' (SQLite file in the search dir), a "
     "SQLAlchemy URL (sqlite:///path.db, postgresql://...) nor journal:<path>"),
    (["--config.search.storage=nosuchdb://x"],
     S + "storage 'nosuchdb://x': unknown database 'nosuchdb'; use sqlite:///<file>, "
     "postgresql://..., mysql://... or journal:<file>"),
    (["--config.search.storage=journal:"],
     S + "config.search.storage='journal:' names no file; give journal:<path>, e.g. "
     "journal:/shared/search.journal"),
    (["--config.search.storage=sqlite:///:memory:"],
     S + "storage 'sqlite:///:memory:': an in-memory database cannot be shared by workers; give a "
     "file"),
    (["--config.search.storage=journal:{tmp}/afile/search.journal"],
     S + "storage 'journal:{tmp}/afile/search.journal': the journal file cannot be created "
     "({tmp}/afile is a file)"),
    (["--config.search.storage=postgresql://postgres@127.0.0.1:1/search"],
     S + "cannot connect to the store postgresql+psycopg://postgres@127.0.0.1:1/search: "
     'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'),
    (["--config.search.pad=0"], S + "config.search.pad=0.0 must be in (0, 0.5]"),
    (["--config.search.pad=0.7"], S + "config.search.pad=0.7 must be in (0, 0.5]"),
    (["--config.search.top_k=0"], S + "config.search.top_k=0 must be an integer >= 1"),
    (["--config.search.border_fraction=0.5"],
     S + "config.search.border_fraction=0.5 must be in (0, 0.5)"),
    (["--config.search.pruner=hyperband"],
     S + "config.search.pruner='hyperband' is unknown; known: median, successive_halving, none"),
    (["--config.search.pruner_startup_trials=-1"],
     S + "config.search.pruner_startup_trials=-1 must be an integer >= 0"),
    (["--config.search.reduction_factor=1"],
     S + "config.search.reduction_factor=1 must be an integer >= 2"),
    (["--config.search.population=0"], S + "config.search.population=0 must be an integer >= 1"),
    (["--config.search.num_workers=-1"],
     S + "config.search.num_workers=-1 must be an integer >= 0"),
    (["--config.search.max_retries=-1"],
     S + "config.search.max_retries=-1 must be an integer >= 0"),
    (["--config.search.seed=-1"], S + "config.search.seed=-1 must be an integer >= 0"),
    (["--config.search.heartbeat_s=0"], S + "config.search.heartbeat_s=0.0 must be > 0"),
    (["--config.search.grace_s=15"],
     S + "config.search.grace_s=15 must be >= 2 x heartbeat_s=10 (a trial is failed after "
     "grace_s without a heartbeat)"),
    (["--config.search.trainer=nosuch.module:train"],
     S + "config.search.trainer='nosuch.module:train' cannot be loaded: No module named 'nosuch'"),
    (["--config.search.trainer=notaspec"],
     S + "config.search.trainer='notaspec' must be 'package.module:function', e.g. "
     "'research.train:train_and_evaluate'."),
    (["--config.search.name=a/b"],
     S + "config.search.name='a/b' must be a non-empty name without '/'"),
    (["--search_dir="],
     S + "--search_dir is empty; pass a directory, e.g. --search_dir=runs/my_run"),
    (["--search_dir={tmp}/afile"],
     S + "--search_dir={tmp}/afile is a file, not a directory; choose another --search_dir"),
    (["extra"], S + "unexpected argument(s) 'extra': this script takes only --flags (see --help)"),
]


def _run(script, args, tmp_path):
  result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          env=env(), cwd=ROOT, timeout=120)
  return result.returncode, result.stderr.splitlines()


@pytest.mark.parametrize("args, line", SEARCH_CASES, ids=[" ".join(a) for a, _ in SEARCH_CASES])
def test_bad_search_input_is_one_line_and_writes_nothing(args, line, tmp_path):
  (tmp_path / "afile").write_text("")
  search_dir = tmp_path / "search"
  args = [f"--search_dir={search_dir}"] + [a.format(tmp=tmp_path) for a in args]
  code, stderr = _run(SEARCH, args, tmp_path)
  assert (code, stderr) == (1, [line.format(tmp=tmp_path)])
  assert not search_dir.exists()
  assert sorted(os.listdir(tmp_path)) == ["afile"]


def test_population_with_a_field_a_population_cannot_vary(tmp_path):
  from research.search.population import VARYING_PATHS
  code, stderr = _run(SEARCH, [f"--search_dir={tmp_path}/search", "--config.search.population=4",
                               "--config.search.space.dropout.path=train.divergence_factor"],
                      tmp_path)
  assert (code, stderr) == (1, [
      S + f"config.search.population=4 trains trials that differ only in "
      f"{', '.join(VARYING_PATHS)}; the space's 'dropout' sets 'train.divergence_factor' (use "
      "population=1)"])
  assert not (tmp_path / "search").exists()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
  """A search ``test`` in a SQLite store, and one ``old`` whose stored config is no longer valid
  (a pruner the workers cannot run)."""
  root = tmp_path_factory.mktemp("store")
  config = synthetic_config()
  master.open_search(config, str(root / "search"))
  bad = synthetic_config(name="old")
  opened = master.open_search(bad, str(root / "search"))
  stored = dict(opened.study.user_attrs["config"])
  stored["search"] = {**stored["search"], "pruner": "hyperband"}
  opened.study.set_user_attr("config", stored)
  return root


WORKER_CASES = [
    ([], W + "--storage is required: the master (scripts/search.py) prints the worker command "
     "with --storage and --search"),
    (["--storage={url}"], W + "--search is required: the master (scripts/search.py) prints the "
     "worker command with --storage and --search"),
    (["--storage={url}", "--search=nosuch"],
     W + "--search='nosuch': the store {url} has no such search; it has: old, test (the master, "
     "scripts/search.py, creates it)"),
    (["--storage=sqlite:///{root}/nosuch.db", "--search=test"],
     W + "storage 'sqlite:///{root}/nosuch.db': the SQLite file {root}/nosuch.db does not exist "
     "(start the master first: scripts/search.py)"),
    (["--storage=journal:{root}/nosuch.journal", "--search=test"],
     W + "storage 'journal:{root}/nosuch.journal': the journal file {root}/nosuch.journal does not "
     "exist (start the master first: scripts/search.py)"),
    (["--storage=study", "--search=test"],
     W + "config.search.storage='study' is neither '' (SQLite file in the search dir), a "
     "SQLAlchemy URL (sqlite:///path.db, postgresql://...) nor journal:<path>"),
    (["--storage=postgresql://postgres@127.0.0.1:1/search", "--search=test"],
     W + "cannot connect to the store postgresql+psycopg://postgres@127.0.0.1:1/search: "
     'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'),
    (["--storage={url}", "--search=test", "--search_dir={root}/elsewhere"],
     W + "--search_dir={root}/elsewhere does not exist; give the search dir as this machine sees "
     "it (the master's, on a shared filesystem)"),
    (["--storage={url}", "--search=old"],
     W + "config.search.pruner='hyperband' is unknown; known: median, successive_halving, none"),
    (["--storage={url}", "--search=test", "--population=0"], W + "--population=0 must be >= 1"),
    (["--storage={url}", "--search=test", "--idle_timeout=0"],
     W + "--idle_timeout=0.0 must be > 0 (seconds)"),
    (["--storage={url}", "--search=test", "--poll=-1"], W + "--poll=-1.0 must be > 0 (seconds)"),
]


@pytest.mark.parametrize("args, line", WORKER_CASES, ids=[" ".join(a) for a, _ in WORKER_CASES])
def test_bad_worker_input_is_one_line_at_once(args, line, store, tmp_path):
  """At once: a worker given a search that does not exist used to wait 600 s in silence."""
  url = f"sqlite:///{store}/search/study.db"
  before = sorted(os.listdir(store)), os.path.getsize(f"{store}/search/study.db")
  fill = {"url": url, "root": store}
  code, stderr = _run(WORKER, [a.format(**fill) for a in args], tmp_path)
  assert (code, stderr) == (1, [line.format(**fill)])
  assert (sorted(os.listdir(store)), os.path.getsize(f"{store}/search/study.db")) == before
  assert study_lib.load(study_lib.open_storage(url), "test/stage0") is None
