r"""Trials per hour of one search with a master and W local workers, on each store.

    python3 scripts/bench/bench_search_stores.py                      # bookkeeping-bound trials
    python3 scripts/bench/bench_search_stores.py --trainer=real --trials=16 --repeats=2

Each repeat runs the same search (one stage of --trials trials, --epochs epochs each) on SQLite
(the default store, a file in the search dir), PostgreSQL (a throwaway local server,
``research.search.postgres``, default durability) and the journal store, interleaved, each
with a master (this process, ``research.search.master.run_search``) and --workers worker
processes.

* ``--trainer=synthetic`` (default): ``research.search.synthetic:train`` with no sleep, so a
  trial is only bookkeeping: the claim, the params, an intermediate value per epoch, the trial
  folder and ``tell``; what the store costs per trial.
* ``--trainer=real``: ``configs/search_digits.py``'s trials (digits MLP, momentum SGD) for
  --epochs epochs: what a real small search gets on this machine.

"trials/h" counts trials from the first claim to the last result (the stores' own timestamps),
so worker start-up (imports) is left out; "wall s" is the whole search including it. Medians
over the repeats, with the min-max spread; "x vs SQLite" is the ratio of medians.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

from absl import flags

from research import launch

_TRAINER = flags.DEFINE_enum("trainer", "synthetic", ["synthetic", "real"], "What a trial runs.")
_TRIALS = flags.DEFINE_integer("trials", 48, "Trials per search.")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs per trial.")
_WORKERS = flags.DEFINE_integer("workers", 4, "Worker processes.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Searches per store (interleaved).")
_STORES = flags.DEFINE_list("stores", ["sqlite", "postgresql", "journal"], "Stores to compare.")


def _config(storage: str):
  import ml_collections
  from configs import search_digits
  if _TRAINER.value == "real":
    config = search_digits.get_config()
  else:
    config = ml_collections.ConfigDict({
        "seed": 0, "synthetic": {"epoch_s": 0.0}, "optimizer": {"learning_rate": 1e-3},
        "train": {"num_epochs": 1},
        "search": {"name": "bench", "space": {"learning_rate": {
            "path": "optimizer.learning_rate", "low": 1e-4, "high": 1e-1, "scale": "log"}},
                   "trainer": "research.search.synthetic:train"}})
  search = config.search
  search.name = "bench"
  search.storage = storage
  search.stage_epochs, search.stage_trials = (_EPOCHS.value,), (_TRIALS.value,)
  search.pruner = "none"
  search.num_workers = _WORKERS.value
  return config


def _one_search(store: str, root: str, server) -> tuple[float, float, int]:
  """(wall seconds, seconds from the first claim to the last result, trials finished)."""
  from research.search import master, study as study_lib
  search_dir = tempfile.mkdtemp(prefix=f"{store}-", dir=root)
  storage = {"sqlite": "", "journal": f"journal:{search_dir}/search.journal",
             "postgresql": server.create_database(os.path.basename(search_dir).replace("-", "_"))
             if server else ""}[store]
  config = _config(storage)
  start = time.perf_counter()
  report = master.run_search(config, search_dir, log=lambda _: None)
  wall = time.perf_counter() - start
  trials = study_lib.load(study_lib.open_storage(report.storage_url), "bench/stage0").get_trials()
  done = [t for t in trials if t.state.is_finished() and t.datetime_start is not None]
  span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done))
  return wall, span.total_seconds(), len(done)


def main() -> int:
  from research.search import postgres
  stores = list(_STORES.value)
  unknown = sorted(set(stores) - {"sqlite", "postgresql", "journal"})
  if unknown:
    raise launch.UserError(f"--stores has {unknown[0]!r}; known: sqlite, postgresql, journal")
  server = None
  if "postgresql" in stores:
    reason = postgres.unavailable_reason()
    if reason:
      print(f"postgresql skipped: {reason}")
      stores.remove("postgresql")
    else:
      server = postgres.PostgresServer().start()
  runs: dict[str, list[tuple[float, float, int]]] = {s: [] for s in stores}
  try:
    with tempfile.TemporaryDirectory() as root:
      for _ in range(_REPEATS.value):
        for store in stores:
          runs[store].append(_one_search(store, root, server))
  finally:
    if server is not None:
      server.stop()
  print(f"{_TRAINER.value} trials, {_TRIALS.value} trials x {_EPOCHS.value} epochs, "
        f"{_WORKERS.value} workers, {_REPEATS.value} repeats, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}")
  print("| store | trials/h (median) | min - max | wall s (median) | x vs SQLite |")
  print("| --- | --- | --- | --- | --- |")
  rates = {s: [3600 * n / span for _, span, n in runs[s]] for s in stores}
  base = statistics.median(rates["sqlite"]) if "sqlite" in rates else None
  for store in stores:
    rate = statistics.median(rates[store])
    ratio = f"{rate / base:.2f}" if base else "-"
    print(f"| {store} | {rate:.0f} | {min(rates[store]):.0f} - {max(rates[store]):.0f} | "
          f"{statistics.median(w for w, _, _ in runs[store]):.1f} | {ratio} |")
  return launch.EXIT_OK


if __name__ == "__main__":
  launch.run(main)
