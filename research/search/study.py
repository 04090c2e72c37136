"""The shared store: Optuna studies that the master and every worker open by URL.

Storage (``config.search.storage``):

* ``""`` (default): a SQLite file ``<search_dir>/study.db`` (embedded, no server; fine for the
  workers of one machine and for a shared filesystem with few writers);
* a SQLAlchemy URL, e.g. ``postgresql://user@host/db`` (many machines; ``postgresql://`` and
  ``postgres://`` mean ``postgresql+psycopg://``, the driver of the ``[postgres]`` extra);
* ``journal:<path>`` (or a path ending in ``.log`` / ``.journal``): Optuna's append-only journal
  file, for clusters with a shared filesystem and no database.

Layout of a search named ``N`` in the store:

* study ``N``: the search itself; user attributes ``config`` (the base experiment config as JSON),
  ``search_dir``, ``num_stages``, ``finished`` (set by the master when the last stage is done),
  ``master`` (who runs it, refreshed while it runs: see ``lock.py``).
* study ``N/stage<s>``: the trials of stage ``s`` (maximize validation accuracy); user attributes
  ``space`` (the stage's ranges), ``num_epochs``, ``num_trials``, ``enqueued``. Each trial has
  the user attributes ``slot`` (its point's index in the stage: the key that makes enqueueing
  idempotent), ``seed`` and ``point``.

Our sampling is done up front: the master draws each stage's points (``space.sample``) and
ENQUEUES them; workers claim waiting trials with :func:`pop_trial`. The claim is atomic on every
store, so no two workers ever run the same trial:

* SQL stores: one transaction ``UPDATE trials SET state = RUNNING WHERE trial_id = :id AND
  state = WAITING`` that goes on only when it changed exactly one row, and in the same transaction
  inserts the trial's first heartbeat and its ``worker`` stamp (so no trial is ever RUNNING
  without them). SQLite ignores ``SELECT ... FOR UPDATE``, on which Optuna's own read-check-write
  transitions rely, so every SQLite transaction here also starts with ``BEGIN IMMEDIATE`` (the
  database's write lock): Optuna's own state changes (``tell``, failing a trial) are then as
  atomic on SQLite as on PostgreSQL.
* journal: every state change is a record appended under the journal's file lock (an ``flock``
  that dies with its process: ``journal.py``) and replayed in the file's order by every process;
  the first ``WAITING -> RUNNING`` record of a trial wins, and only the process that wrote it owns
  the trial (Optuna's ``set_trial_state_values``).

Liveness (:func:`fail_dead_trials`): a RUNNING trial is failed when

* its worker ran on this host and its pid is gone (fast path, ``pid_check``);
* its heartbeat is older than ``grace_s``: on SQL stores the heartbeat is Optuna's own
  (``RDBStorage(heartbeat_interval=, grace_period=)``: ``record_heartbeat`` writes the database's
  clock into ``trial_heartbeats``); the journal store has no Optuna heartbeat, so the worker stamps
  a ``heartbeat`` user attribute (wall clock);
* it has no heartbeat at all and started more than ``grace_s`` ago (a worker that died between
  claiming a journal trial and stamping it);

and the two heartbeat rules apply only once the master has seen the store answer for more than
``grace_s`` since its last stall (``watched_s``): while the store is stalled (a lock held by a
process that hangs, or Optuna's symlink lock left by a killed process where there is no
``flock``: ``journal.py``) no live worker's heartbeat can land either.

A failed trial is re-enqueued by :class:`RetryStaleTrial`, Optuna's
``RetryHeartbeatStaleTrialCallback`` (also configured as the SQL storage's
``heartbeat_stale_trial_callback``, so Optuna's own ``fail_stale_trials`` does the same) up to
``max_retries`` times.
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import socket
import time
import warnings
from typing import Any, Callable, Mapping, NamedTuple

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

#: Optuna's own INFO line per trial would drown the master's report.
optuna.logging.set_verbosity(optuna.logging.WARNING)

DB_FILE = "study.db"
SQLITE_TIMEOUT_S = 120  # concurrent SQLite writers wait for the lock instead of failing
CONNECT_TIMEOUT_S = 15  # a database server that does not answer within this is an error
JOURNAL_PREFIX = "journal:"
#: ``postgresql://`` means psycopg 3 here (``pip install 'trainlab[postgres]'``); SQLAlchemy's
#: default for it would be psycopg2.
POSTGRES_DRIVER = "postgresql+psycopg"
#: The drivers of the SQL stores, for a clear message when one is missing.
DRIVER_PACKAGES = {"psycopg": "psycopg[binary] (pip install 'trainlab[postgres]')",
                   "psycopg2": "psycopg2-binary", "pymysql": "PyMySQL", "mysqldb": "mysqlclient"}

Log = Callable[[str], None]


def storage_url(spec: str, search_dir: str) -> str:
  """The canonical URL of ``config.search.storage`` (see module doc); absolute paths.

  Raises:
    ValueError: ``spec`` is none of the accepted forms.
  """
  spec = (spec or "").strip()
  if not spec:
    return "sqlite:///" + os.path.abspath(os.path.join(search_dir, DB_FILE))
  if spec.startswith(JOURNAL_PREFIX):
    path = spec[len(JOURNAL_PREFIX):]
    if not path:
      raise ValueError("config.search.storage='journal:' names no file; give journal:<path>, "
                       "e.g. journal:/shared/search.journal")
    return JOURNAL_PREFIX + os.path.abspath(path)
  if spec.endswith((".log", ".journal")) and "://" not in spec:
    return JOURNAL_PREFIX + os.path.abspath(spec)
  if "://" not in spec:
    raise ValueError(f"config.search.storage={spec!r} is neither '' (SQLite file in the search "
                     "dir), a SQLAlchemy URL (sqlite:///path.db, postgresql://...) nor "
                     "journal:<path>")
  scheme, rest = spec.split("://", 1)
  if scheme in ("postgresql", "postgres"):
    return f"{POSTGRES_DRIVER}://{rest}"
  return spec


def journal_path(url: str) -> str | None:
  """The file of a ``journal:`` URL, None for SQL URLs."""
  return url[len(JOURNAL_PREFIX):] if url.startswith(JOURNAL_PREFIX) else None


def sqlite_path(url: str) -> str | None:
  """The file of a ``sqlite:///`` URL, None for other URLs."""
  return url[len("sqlite:///"):] if url.startswith("sqlite:///") else None


def hide_password(url: str) -> str:
  """``url`` with its password replaced by ``***`` (for logs)."""
  if journal_path(url) is not None or "@" not in url:
    return url
  import sqlalchemy
  try:
    return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
  except Exception:  # noqa: BLE001 (a malformed URL is reported elsewhere)
    return url


def _writable_location(path: str) -> str | None:
  """Why ``path`` cannot be created (None when it can): nothing is created here."""
  existing = os.path.dirname(path)
  while existing and not os.path.exists(existing):
    existing = os.path.dirname(existing)
  existing = existing or "."
  if not os.path.isdir(existing):
    return f"{existing} is a file"
  if not os.access(existing, os.W_OK | os.X_OK):
    return f"{existing} is not writable"
  return None


def check_storage_url(url: str, *, must_exist: bool) -> None:
  """Checks a URL from :func:`storage_url` without writing anything.

  Args:
    url: the store.
    must_exist: True for a worker (a store file must already be there: a worker never creates a
      store); False for the master (the file may be created, its folder must be writable).

  Raises:
    ValueError: unknown URL scheme or dialect, a missing driver, a database server that does not
      answer, a store file that does not exist (``must_exist``) or cannot be created.
  """
  path = journal_path(url) or sqlite_path(url)
  if path is not None:
    kind = "journal file" if journal_path(url) is not None else "SQLite file"
    if path in ("", ":memory:") or "?mode=memory" in path:
      raise ValueError(f"storage {url!r}: an in-memory database cannot be shared by workers; "
                       "give a file")
    if os.path.isdir(path):
      raise ValueError(f"storage {url!r}: {path} is a directory, not a {kind}")
    if must_exist and not os.path.isfile(path):
      raise ValueError(f"storage {url!r}: the {kind} {path} does not exist (start the master "
                       "first: scripts/search.py)")
    problem = None if os.path.exists(path) else _writable_location(path)
    if problem:
      raise ValueError(f"storage {url!r}: the {kind} cannot be created ({problem})")
    if journal_path(url) is not None:
      return
  import sqlalchemy
  try:
    parsed = sqlalchemy.engine.make_url(url)
  except sqlalchemy.exc.ArgumentError:
    raise ValueError(f"storage {hide_password(url)!r} is not a valid SQLAlchemy URL "
                     "(e.g. sqlite:////path/study.db, postgresql://user@host/db)") from None
  try:
    dialect = parsed.get_dialect()
  except sqlalchemy.exc.NoSuchModuleError:
    raise ValueError(f"storage {hide_password(url)!r}: unknown database {parsed.drivername!r}; "
                     "use sqlite:///<file>, postgresql://..., mysql://... or "
                     "journal:<file>") from None
  try:
    dialect.import_dbapi()
  except ImportError:
    package = DRIVER_PACKAGES.get(dialect.driver, dialect.driver)
    raise ValueError(f"storage {hide_password(url)!r} needs the database driver "
                     f"{dialect.driver!r}, which is not installed: install {package}") from None
  if path is None:  # a database server: it must answer (a read-only connection, closed again)
    # a host that drops packets must not hang the check for the TCP timeout
    timeout = {"connect_timeout": CONNECT_TIMEOUT_S} if parsed.get_backend_name() == "postgresql" \
        else {}
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                      connect_args=timeout)
    try:
      with engine.connect():
        pass
    except sqlalchemy.exc.SQLAlchemyError as err:
      cause = str(getattr(err, "orig", None) or err).strip().splitlines()
      raise ValueError(f"cannot connect to the store {hide_password(url)}: "
                       f"{cause[0] if cause else type(err).__name__}") from None
    finally:
      engine.dispose()


def _sqlite_begin_immediate(storage: optuna.storages.RDBStorage) -> None:
  """Every transaction of ``storage``'s engine takes SQLite's write lock first.

  SQLAlchemy's recipe for pysqlite ("Serializable isolation"): the driver's own implicit BEGIN is
  off (``isolation_level=None`` in the connect args) and each transaction starts with
  ``BEGIN IMMEDIATE``, so a read-check-write (Optuna's state changes) cannot interleave with
  another process's.
  """
  import sqlalchemy

  def begin(connection):
    connection.exec_driver_sql("BEGIN IMMEDIATE")

  sqlalchemy.event.listen(storage.engine, "begin", begin)


def open_storage(url: str, *, heartbeat_s: float | None = None, grace_s: float | None = None,
                 retry: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None
                 ) -> optuna.storages.BaseStorage:
  """An Optuna storage for a URL from :func:`storage_url` (creates a missing store file).

  Args:
    url: the store.
    heartbeat_s, grace_s, retry: on SQL stores, Optuna's heartbeat settings
      (``heartbeat_interval``, ``grace_period``, ``heartbeat_stale_trial_callback``): what Optuna's
      own ``fail_stale_trials`` applies. The journal store has no Optuna heartbeat; there the
      worker stamps a ``heartbeat`` user attribute (module doc).
  """
  path = journal_path(url)
  if path is not None:
    from research.search.journal import journal_backend
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return optuna.storages.JournalStorage(journal_backend(path))
  kwargs: dict[str, Any] = {}
  if heartbeat_s is not None:
    kwargs = dict(heartbeat_interval=heartbeat_s, grace_period=grace_s,
                  heartbeat_stale_trial_callback=retry)
  with warnings.catch_warnings():  # heartbeat_interval is an "experimental" argument
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    path = sqlite_path(url)
    if path is not None:
      os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
      storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {
          "timeout": SQLITE_TIMEOUT_S, "isolation_level": None}}, **kwargs)
      _sqlite_begin_immediate(storage)
      return storage
    return optuna.storages.RDBStorage(url, **kwargs)


def rdb_backend(storage_or_study: Any) -> optuna.storages.RDBStorage | None:
  """The ``RDBStorage`` under a study or storage (Optuna wraps it in a cache), None for others."""
  storage = getattr(storage_or_study, "_storage", storage_or_study)
  storage = getattr(storage, "_backend", storage)
  return storage if isinstance(storage, optuna.storages.RDBStorage) else None


def stage_study_name(search_name: str, stage: int) -> str:
  return f"{search_name}/stage{int(stage)}"


def create_or_load(storage: optuna.storages.BaseStorage, name: str,
                   pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
  """The study ``name`` (maximize), created if absent."""
  return optuna.create_study(storage=storage, study_name=name, direction="maximize",
                             load_if_exists=True, pruner=pruner)


def load(storage: optuna.storages.BaseStorage, name: str,
         pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study | None:
  """The study ``name``, or None when the store has no such study."""
  if name not in optuna.get_all_study_names(storage):
    return None
  return optuna.load_study(study_name=name, storage=storage, pruner=pruner)


#: ``config.search.pruner`` values (``make_pruner``).
PRUNERS = ("median", "successive_halving", "none")


def make_pruner(search_cfg) -> optuna.pruners.BasePruner:
  """``config.search.pruner``: ``median`` (stop a trial whose epoch-``t`` validation accuracy is
  below the median of earlier trials at ``t``, after ``pruner_startup_trials`` trials),
  ``successive_halving`` (keep the top ``1/reduction_factor`` at rungs 1, r, r**2, ... epochs) or
  ``none``. (Optuna's Hyperband needs its own sampler and ``study.optimize``; our workers run
  enqueued trials, so it is not offered.)"""
  from research.search.validate import search_value
  name = search_value(search_cfg, "pruner")
  # The warm-up (``pruner_warmup_epochs``: epochs never pruned) is applied by the worker, which
  # also never prunes after a trial's last epoch.
  if name == "median":
    return optuna.pruners.MedianPruner(
        n_startup_trials=int(search_value(search_cfg, "pruner_startup_trials")))
  if name == "successive_halving":
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=int(search_value(search_cfg, "reduction_factor")))
  if name == "none":
    return optuna.pruners.NopPruner()
  raise ValueError(f"config.search.pruner={name!r} is unknown; known: {', '.join(PRUNERS)}")


def worker_id() -> str:
  """``host:pid`` of this process (stamped on the trials it runs)."""
  return f"{socket.gethostname()}:{os.getpid()}"


def enqueue(study: optuna.Study, points: list[dict[str, float]], user_attrs: list[dict[str, Any]]
            ) -> None:
  """Adds waiting trials with fixed hyperparameters (each with its user attributes, written in
  the same operation as the trial itself)."""
  for point, attrs in zip(points, user_attrs):
    study.enqueue_trial(point, user_attrs=attrs)


def _study_id(study: optuna.Study) -> int:
  return study._study_id


def _waiting_ids(study: optuna.Study) -> list[int]:
  """Ids of the study's WAITING trials, oldest first."""
  backend = rdb_backend(study)
  if backend is None:
    return [t._trial_id for t in study._storage.get_all_trials(
        _study_id(study), deepcopy=False, states=(TrialState.WAITING,))]
  from optuna.storages._rdb import models
  session = backend.scoped_session()
  try:
    rows = (session.query(models.TrialModel.trial_id)
            .filter(models.TrialModel.study_id == _study_id(study),
                    models.TrialModel.state == TrialState.WAITING)
            .order_by(models.TrialModel.trial_id).all())
    session.commit()
    return [row[0] for row in rows]
  finally:
    session.close()


def _claim_rdb(backend: optuna.storages.RDBStorage, trial_id: int, worker: str,
               distributions: Mapping[str, BaseDistribution]) -> bool:
  """WAITING -> RUNNING, first heartbeat, worker stamp and the enqueued point as the trial's
  params (for the names in ``distributions``) in one transaction (module doc)."""
  from optuna.storages._rdb import models
  session = backend.scoped_session()
  try:
    changed = (session.query(models.TrialModel)
               .filter(models.TrialModel.trial_id == trial_id,
                       models.TrialModel.state == TrialState.WAITING)
               .update({models.TrialModel.state: TrialState.RUNNING},
                       synchronize_session=False))
    if changed != 1:  # another worker was first
      session.rollback()
      return False
    trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
    trial.datetime_start = datetime.datetime.now()  # Optuna's model stores what its setter takes
    session.add(models.TrialHeartbeatModel(trial_id=trial_id))  # the database's clock
    session.add(models.TrialUserAttributeModel(trial_id=trial_id, key="worker",
                                               value_json=json.dumps(worker)))
    if distributions:
      fixed = (session.query(models.TrialSystemAttributeModel.value_json)
               .filter(models.TrialSystemAttributeModel.trial_id == trial_id,
                       models.TrialSystemAttributeModel.key == "fixed_params").one_or_none())
      fixed = json.loads(fixed[0]) if fixed else {}
      have = {row[0] for row in session.query(models.TrialParamModel.param_name)
              .filter(models.TrialParamModel.trial_id == trial_id)}
      for name, distribution in distributions.items():
        if name in fixed and name not in have:  # what trial.suggest_* would record
          session.add(models.TrialParamModel(
              trial_id=trial_id, param_name=name,
              param_value=distribution.to_internal_repr(fixed[name]),
              distribution_json=optuna.distributions.distribution_to_json(distribution)))
    session.commit()
    return True
  except BaseException:
    session.rollback()
    raise
  finally:
    session.close()


def _claim_journal(storage: optuna.storages.BaseStorage, trial_id: int, worker: str) -> bool:
  try:
    if not storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
      return False
  except optuna.exceptions.UpdateFinishedTrialError:
    return False
  # Not atomic with the claim: a worker dying here leaves a RUNNING trial without heartbeat,
  # which fail_dead_trials fails grace_s after its start.
  storage.set_trial_user_attr(trial_id, "worker", worker)
  storage.set_trial_user_attr(trial_id, "heartbeat", time.time())
  return True


def pop_trial(study: optuna.Study,
              distributions: Mapping[str, BaseDistribution] | None = None
              ) -> optuna.trial.Trial | None:
  """Claims one WAITING trial of ``study`` for this process (None when none is left).

  The claim succeeds for exactly one caller across processes on every store (module doc).

  Args:
    study: a stage's study.
    distributions: the distributions of the enqueued parameters (the stage's space): on SQL
      stores the claim records the trial's point as its params with them, so that
      ``trial.suggest_*`` has nothing left to write. Without them, Optuna's trial cache is
      refreshed after the claim (it must know a trial before ``suggest_*`` writes to it), which
      reads every unfinished trial of the study.
  """
  backend = rdb_backend(study)
  worker = worker_id()
  for trial_id in _waiting_ids(study):
    claimed = (_claim_rdb(backend, trial_id, worker, distributions or {})
               if backend is not None else _claim_journal(study._storage, trial_id, worker))
    if claimed:
      if backend is not None and not distributions:
        study._storage.get_all_trials(_study_id(study), deepcopy=False, states=())
      return optuna.trial.Trial(study, trial_id)
  return None


def record_heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
  """One heartbeat of a running trial: Optuna's on SQL stores, a user attribute on the journal."""
  backend = rdb_backend(storage)
  if backend is not None:
    backend.record_heartbeat(trial_id)
  else:
    storage.set_trial_user_attr(trial_id, "heartbeat", time.time())


def pid_alive(pid: int) -> bool:
  """Whether a process with this pid exists on this host (zombies count as dead)."""
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:  # a killed child that was not reaped yet is a zombie: dead for our purpose
    with open(f"/proc/{int(pid)}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"
  except OSError:
    return True


def _rdb_heartbeat_ages(backend: optuna.storages.RDBStorage, study_id: int
                        ) -> dict[int, float | None]:
  """Seconds since the last heartbeat of each RUNNING trial (None: it has none), by the
  database's clock (Optuna's ``_get_stale_trial_ids`` rule, with the ages kept)."""
  import sqlalchemy
  from optuna.storages._rdb import models
  session = backend.scoped_session()
  try:
    now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
    rows = (session.query(models.TrialModel.trial_id, models.TrialHeartbeatModel.heartbeat)
            .outerjoin(models.TrialHeartbeatModel,
                       models.TrialHeartbeatModel.trial_id == models.TrialModel.trial_id)
            .filter(models.TrialModel.study_id == study_id,
                    models.TrialModel.state == TrialState.RUNNING).all())
    session.commit()
  finally:
    session.close()
  return {trial_id: None if beat is None else (now - beat).total_seconds()
          for trial_id, beat in rows}


def is_dead(trial: optuna.trial.FrozenTrial, *, grace_s: float, heartbeat_age_s: float | None,
            pid_check: bool = True, host: str | None = None,
            now: datetime.datetime | None = None, watched_s: float | None = None) -> str | None:
  """Why a RUNNING trial's worker is gone, or None while it seems alive.

  Args:
    trial: the RUNNING trial.
    grace_s: how long a trial may go without a heartbeat.
    heartbeat_age_s: seconds since its last heartbeat, None when it has none.
    pid_check: a worker on this host whose pid is gone is dead at once.
    host: this host's name (default ``socket.gethostname()``); now: the local time.
    watched_s: for how long the caller has seen the store answer without stalling (None: not
      tracked). A stalled store holds back every worker's heartbeat, so a stale heartbeat proves
      nothing until the store has answered for more than ``grace_s``; the pid check needs no
      store and still applies.
  """
  worker = trial.user_attrs.get("worker", "")
  host = socket.gethostname() if host is None else host
  worker_host, _, pid = worker.rpartition(":")
  if pid_check and worker_host == host and pid.isdigit() and not pid_alive(int(pid)):
    return f"worker {worker} exited"
  if watched_s is not None and watched_s <= grace_s:
    return None
  if heartbeat_age_s is not None:
    if heartbeat_age_s > grace_s:
      return f"no heartbeat from worker {worker or '?'} for {heartbeat_age_s:.0f}s"
    return None
  now = datetime.datetime.now() if now is None else now
  started = trial.datetime_start or now
  age = (now - started).total_seconds()
  if age > grace_s:
    return (f"RUNNING for {age:.0f}s without any heartbeat (its worker "
            f"{worker or 'unknown'} died while claiming it)")
  return None


class DeadTrial(NamedTuple):
  """A RUNNING trial whose worker is gone."""
  trial: optuna.trial.FrozenTrial
  reason: str


def dead_trials(study: optuna.Study, *, grace_s: float, pid_check: bool = True,
                watched_s: float | None = None) -> list[DeadTrial]:
  """The RUNNING trials of ``study`` whose worker is gone (see :func:`is_dead`)."""
  running = study._storage.get_all_trials(_study_id(study), deepcopy=False,
                                          states=(TrialState.RUNNING,))
  if not running:
    return []
  backend = rdb_backend(study)
  if backend is not None:
    ages = _rdb_heartbeat_ages(backend, _study_id(study))
  else:
    now = time.time()
    ages = {t._trial_id: (now - float(t.user_attrs["heartbeat"])
                          if "heartbeat" in t.user_attrs else None) for t in running}
  dead = []
  for trial in running:
    if trial._trial_id not in ages:  # finished since the first read
      continue
    reason = is_dead(trial, grace_s=grace_s, heartbeat_age_s=ages[trial._trial_id],
                     pid_check=pid_check, watched_s=watched_s)
    if reason is not None:
      dead.append(DeadTrial(trial, reason))
  return dead


class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
  """Optuna's retry callback for a trial whose worker died: a new WAITING trial with the same
  point (``fixed_params``) and Optuna's ``failed_trial`` / ``retry_history``, at most
  ``max_retry`` times per point.

  Of the failed trial's user attributes only those that define it (``slot``, ``seed``,
  ``point``) are carried over, plus ``retry_of`` (the failed trial's number); its worker stamp,
  heartbeat and folder are not.
  """

  KEEP = ("slot", "seed", "point")

  def __init__(self, max_retry: int | None, log: Log | None = None):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
      super().__init__(max_retry=max_retry)
    self.log = log

  def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    attempts = len(trial.system_attrs.get("retry_history", [])) + 1
    if self._max_retry is not None and attempts > self._max_retry:
      if self.log:
        self.log(f"[master] {study.study_name} trial {trial.number} not retried "
                 f"(max_retries={self._max_retry} reached)")
      return
    clean = copy.copy(trial)
    clean.user_attrs = {**{k: v for k, v in trial.user_attrs.items() if k in self.KEEP},
                        "retry_of": trial.number}
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
      super().__call__(study, clean)
    if self.log:
      self.log(f"[master] {study.study_name} trial {trial.number} re-enqueued "
               f"(attempt {attempts + 1})")


def fail_dead_trials(study: optuna.Study, *, grace_s: float = 300.0, pid_check: bool = True,
                     retry: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
                     on_failed: Callable[[optuna.trial.FrozenTrial, str], None] | None = None,
                     log: Log | None = None, watched_s: float | None = None) -> list[int]:
  """Marks FAILED the RUNNING trials whose worker is gone; returns their numbers.

  For each: ``fail_reason`` is stamped, the trial is failed (atomic: of several processes doing
  this at once, one wins and only that one goes on), ``on_failed(trial, reason)`` runs (the
  master renames the trial's folder), then ``retry(study, trial)`` (e.g. :class:`RetryStaleTrial`).
  ``watched_s``: see :func:`is_dead`.
  """
  storage = study._storage
  failed = []
  for trial, reason in dead_trials(study, grace_s=grace_s, pid_check=pid_check,
                                   watched_s=watched_s):
    try:
      storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
      storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
      continue  # it finished meanwhile, or another process failed it first
    # The journal store ignores (on replay) a change to a trial that finished first, without
    # raising: what counts is what the store ended with (a trial its worker failed itself
    # meanwhile carries the worker's reason, not ours).
    final = storage.get_trial(trial._trial_id)
    if final.state != TrialState.FAIL or final.user_attrs.get("fail_reason") != reason:
      continue
    failed.append(trial.number)
    if log:
      log(f"[master] {study.study_name} trial {trial.number} marked FAILED: {reason}")
    if on_failed is not None:
      on_failed(trial, reason)
    if retry is not None:
      retry(study, final)
  return failed


def set_json_attr(study: optuna.Study, key: str, value: Any) -> None:
  study.set_user_attr(key, json.loads(json.dumps(value)))


def counts(study: optuna.Study) -> dict[str, int]:
  """Number of trials per state name (``WAITING``, ``RUNNING``, ``COMPLETE``, ``PRUNED``,
  ``FAIL``)."""
  out = {state.name: 0 for state in TrialState}
  for trial in study.get_trials(deepcopy=False):
    out[trial.state.name] += 1
  return out
