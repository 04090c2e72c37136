"""Every entry point that trains, on several processes (``jax.distributed``, gloo on 127.0.0.1):
the same results as one process, process 0 the only one that prints and writes.

2 processes x 2 fake CPU devices against 1 process x 4 devices (test_multihost.py does the same
for scripts/train.py):

* ablate: a vmapped members program and a separate run; each trains data parallel over both
  processes (``train_members``' data-parallel epoch, ``train_and_evaluate``). Records, summaries
  and best checkpoints equal one process's to rtol 1e-5 (gloo's all-reduce adds the partial
  gradients in another order than XLA:CPU in one process: test_multihost.py measures <= 1.2e-7);
  a re-launch on 2 processes skips what is finished.
* ensemble: seeds trained as members (data parallel), snapshots, checkpoint and average kinds
  and the distilled student (computed alike by every process): ensemble.json equal to one
  process's (timings aside).
* sanity, gradcheck: small computations every process does alike (float64 differences on 4
  examples, 20 examples to overfit: nothing worth splitting): the same report, printed once.
* second_order: a time budget ends each method, so the processes run every method on their
  own devices (their step counts may differ; nothing crosses processes); process 0 writes.
* reproduce: claims that train through the engine (``train_members``, ``train_and_evaluate``:
  batch_noise's 157-step epochs, which stalled XLA:CPU's gloo collectives before
  ``DataParallel.throttle``) and that compute alone: the same verdicts and numbers as one process.

The ablation runs in the test command (it covers the members trainer's data-parallel epoch, a
separate run and process 0's files); the others take 4 minutes here and are marked ``slow``
(``python3 -m pytest -m slow tests/test_multihost_scripts.py``).
"""
import json
import os

import chex
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import multiprocess
from tests.train_helpers import read_jsonl

SMALL = ["--config.model.hidden_sizes=(16,)", "--config.data.subset=256",
         "--config.train.num_epochs=2", "--config.monitor.every_steps=3",
         "--noconfig.monitor.figures"]
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("jax_cache")


def _ok(results):
  for code, stdout, stderr in results:
    assert code == 0, stdout[-2000:] + stderr[-3000:]
  return results


def _one_voice(results):
  """Process 0's standard output (processes 1.. print nothing)."""
  (_, main_out, _), *others = results
  for _, stdout, _ in others:
    assert stdout == ""
  return main_out


def _numbers(value, skip=("time", "wall", "_s", "workdir", "finished", "commit", "cost")):
  """The numbers of a JSON value, in order, leaving out keys that name times or paths."""
  if isinstance(value, dict):
    return [n for k, v in sorted(value.items()) if not any(s in k for s in skip)
            for n in _numbers(v, skip)]
  if isinstance(value, list):
    return [n for v in value for n in _numbers(v, skip)]
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return []
  return [float(value)]


def _epoch_rows(workdir):
  return [{k: v for k, v in r.items() if k != "time"}
          for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))]


ABLATION = ["--grid=optimizer.learning_rate=1e-3,3e-3,1e-2", "--max_members=2", *SMALL]


@pytest.fixture(scope="module")
def ablations(tmp_path_factory, cache):
  root = tmp_path_factory.mktemp("ablate")
  one = _ok(multiprocess.run("ablate.py", [f"--workdir={root / 'one'}", *ABLATION], 1, cache))
  two = _ok(multiprocess.run("ablate.py", [f"--workdir={root / 'two'}", *ABLATION], 2, cache))
  return root, one, two


def test_ablate_on_two_processes_trains_what_one_process_trains(ablations):
  root, _, two = ablations
  out = _one_voice(two)
  assert "[1/2] 2 vmapped members of one program" in out and "[2/2] separate run" in out
  assert "3 variants: 3 done" in out
  for name in sorted(os.listdir(root / "one")):
    one_dir, two_dir = root / "one" / name, root / "two" / name
    if not one_dir.is_dir():
      continue
    assert sorted(os.listdir(two_dir)) == sorted(os.listdir(one_dir)), name
    one_rows, two_rows = _epoch_rows(one_dir), _epoch_rows(two_dir)
    assert [sorted(r) for r in two_rows] == [sorted(r) for r in one_rows]   # each row once
    np.testing.assert_allclose(_numbers(two_rows), _numbers(one_rows), **TOLERANCE)
    one_summary = json.loads((one_dir / "summary.json").read_text())
    two_summary = json.loads((two_dir / "summary.json").read_text())
    assert two_summary["status"] == one_summary["status"] == "done"
    assert two_summary["best_epoch"] == one_summary["best_epoch"]
    assert two_summary["num_devices"] == one_summary["num_devices"] * (
        1 if "trained_as" not in two_summary else 4)   # members: data parallel on 2 processes
    assert two_summary["test_accuracy"] == pytest.approx(one_summary["test_accuracy"], abs=1e-6)
    best = os.path.join("checkpoints", str(one_summary["best_epoch"]), "state")
    restore = ocp.StandardCheckpointer().restore
    chex.assert_trees_all_close(restore(str(two_dir / best))["params"],
                                restore(str(one_dir / best))["params"], **TOLERANCE)


def test_a_relaunch_on_two_processes_skips_what_is_finished(ablations, cache):
  root, _, _ = ablations
  before = {name: _epoch_rows(root / "two" / name) for name in os.listdir(root / "two")
            if (root / "two" / name).is_dir()}
  out = _one_voice(_ok(multiprocess.run("ablate.py", [f"--workdir={root / 'two'}", *ABLATION],
                                        2, cache)))
  assert "3 variants: finished before: 3 done" in out
  assert {name: _epoch_rows(root / "two" / name) for name in before} == before


@pytest.mark.slow
def test_an_ablation_killed_on_both_processes_resumes_to_the_uninterrupted_one(ablations,
                                                                                tmp_path, cache):
  """SIGKILL of both processes in the separate run's first epoch (after the members program),
  then the same command: the members are skipped, the run resumes from its checkpoint, and
  every record and best checkpoint equals the uninterrupted 2-process ablation's, bit for bit."""
  root, _, _ = ablations
  workdir = tmp_path / "killed"
  killed = multiprocess.run("ablate.py", [f"--workdir={workdir}", *ABLATION,
                                          "--kill_after_epochs=3"], 2, cache)
  assert [code for code, _, _ in killed] == [-9, -9], killed[0][2][-2000:]
  out = _one_voice(_ok(multiprocess.run("ablate.py", [f"--workdir={workdir}", *ABLATION], 2,
                                        cache)))
  assert "3 variants: 1 done; finished before: 2 done" in out and "resumed from" in out
  restore = ocp.StandardCheckpointer().restore
  for name in os.listdir(root / "two"):
    if not (root / "two" / name).is_dir():
      continue
    assert _epoch_rows(workdir / name) == _epoch_rows(root / "two" / name)   # each row once
    best = json.loads((root / "two" / name / "summary.json").read_text())["best_epoch"]
    state = os.path.join("checkpoints", str(best), "state")
    chex.assert_trees_all_equal(restore(str(workdir / name / state))["params"],
                                restore(str(root / "two" / name / state))["params"])


ENSEMBLE = ["--config=configs/ensemble_digits.py", "--config.data.subset=256",
            "--config.model.hidden_sizes=(32,)", "--config.train.num_epochs=2",
            "--config.averaging.polyak_start_epoch=1",
            "--config.ensemble.kinds=seeds,checkpoints,averages", "--config.ensemble.num_members=2",
            "--config.ensemble.timing_repeats=1", "--config.distill.num_epochs=1"]


@pytest.mark.slow
def test_the_ensemble_study_on_two_processes_equals_one_process(tmp_path, cache):
  args = [a.replace("configs/", os.path.join(multiprocess.REPO, "configs", "")) for a in ENSEMBLE]
  one = _ok(multiprocess.run("ensemble.py", [f"--workdir={tmp_path / 'one'}", *args], 1, cache))
  two = _ok(multiprocess.run("ensemble.py", [f"--workdir={tmp_path / 'two'}", *args], 2, cache))
  assert "== checkpoints ==" in _one_voice(two) and "== checkpoints ==" in one[0][1]
  a = json.loads((tmp_path / "one" / "ensemble.json").read_text())
  b = json.loads((tmp_path / "two" / "ensemble.json").read_text())
  assert set(b["ensembles"]) == set(a["ensembles"]) == {"seeds", "seeds_ema", "checkpoints",
                                                        "averages"}
  np.testing.assert_allclose(_numbers(b), _numbers(a), rtol=1e-4, atol=1e-6)
  assert sorted(os.listdir(tmp_path / "two" / "snapshots")) == ["1", "2"]
  assert os.path.exists(tmp_path / "two" / "figures" / "ensemble_accuracy_vs_k.png")


@pytest.mark.slow
@pytest.mark.parametrize("script, args", [
    ("sanity.py", ["--config.sanity.overfit_steps=50"]),
    ("gradcheck.py", ["--config.gradcheck.burn_in_steps=5"]),
], ids=["sanity", "gradcheck"])
def test_small_checks_on_two_processes_print_one_process_report(script, args, cache):
  one = _ok(multiprocess.run(script, args, 1, cache))
  two = _ok(multiprocess.run(script, args, 2, cache))
  assert _one_voice(two) == one[0][1] != ""


@pytest.mark.slow
def test_second_order_on_two_processes_writes_one_report(tmp_path, cache):
  two = _ok(multiprocess.run("second_order.py", [
      f"--workdir={tmp_path}", "--config.second_order.methods=lbfgs,newton",
      "--config.second_order.time_budget_s=0.5"], 2, cache))
  out = _one_voice(two)
  assert "softmax regression: 650 parameters" in out and "  lbfgs " in out
  report = json.loads((tmp_path / "second_order.json").read_text())
  assert set(report["methods"]) == {"lbfgs", "newton"}
  assert sorted(os.listdir(tmp_path)) == ["loss_vs_evaluations.png", "loss_vs_time.png",
                                          "second_order.json"]


CLAIMS = ["--tiny", "--claims=initial_loss,overfit,batch_noise,ensembles"]


@pytest.mark.slow
def test_claims_on_two_processes_reach_one_process_verdicts(tmp_path, cache):
  one = _ok(multiprocess.run("reproduce.py", [f"--workdir={tmp_path / 'one'}", *CLAIMS], 1,
                             cache))
  two = _ok(multiprocess.run("reproduce.py", [f"--workdir={tmp_path / 'two'}", *CLAIMS], 2,
                             cache))
  assert "CLAIMS.md" in _one_voice(two) and "CLAIMS.md" in one[0][1]
  for name in ("initial_loss", "overfit", "batch_noise", "ensembles"):
    a = json.loads((tmp_path / "one" / "results" / f"{name}.json").read_text())
    b = json.loads((tmp_path / "two" / "results" / f"{name}.json").read_text())
    assert b["verdict"] == a["verdict"] and b["error"] is None, name
    np.testing.assert_allclose(_numbers(b["numbers"]), _numbers(a["numbers"]), rtol=1e-4,
                               atol=1e-6, err_msg=name)
    assert os.path.exists(tmp_path / "two" / "figures" / f"{name}.png")
