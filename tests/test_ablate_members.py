"""An ablation trained as vmapped members equals the same ablation as separate runs; diverged,
interrupted and resumed variants; a re-launch skips what is finished; compare reads them all."""
import json
import os

import pytest

from research import ablate
from research.ablate import compare, launcher, plan
from tests.train_helpers import small_config

GRID = ["optimizer.learning_rate=1e-2,50"]     # 50 diverges in the first epoch


def _variants():
  config = small_config(epochs=2, hidden=(16,))
  config.data.subset = 256
  config.monitor.enabled = False   # fewer programs to compile; tests/test_ablate_e2e.py has it on
  config.monitor.figures = False
  return ablate.expand(config, ablate.parse_grid(config, GRID, 1))


def _interrupt_first_epoch():
  calls = []

  def on_epoch_end():
    calls.append(1)
    if len(calls) == 1:
      raise KeyboardInterrupt
  return on_epoch_end


def test_members_equal_separate_runs_and_relaunches_skip_or_resume(tmp_path):
  variants, cache = _variants(), launcher.DataCache()
  launcher.check_variants(variants, cache)
  stacked, separate = str(tmp_path / "stacked"), str(tmp_path / "separate")
  units = ablate.plan_units(variants)
  assert [u.kind for u in units] == [plan.MEMBERS]
  outcomes = launcher.run_ablation(stacked, units, cache=cache, log=lambda _: None)
  assert [o.status for o in outcomes] == ["done", "diverged"]

  # Separate runs, the first one interrupted after its first epoch (Ctrl-C), then resumed.
  alone = ablate.plan_units(variants, vmap=False)
  with pytest.raises(KeyboardInterrupt):
    launcher.run_ablation(separate, alone, cache=cache, on_epoch_end=_interrupt_first_epoch(),
                          log=lambda _: None)
  first = compare.read_run(os.path.join(separate, variants[0].name))
  assert (first.status, first.metrics["epochs"], first.metrics["test_accuracy"]) == (
      "interrupted", 1.0, None)
  lines = []
  outcomes = launcher.run_ablation(separate, alone, cache=cache, log=lines.append)
  assert [o.status for o in outcomes] == ["done", "diverged"]
  assert any("resumed from" in line and "epoch 1 of 2 done" in line for line in lines)

  for variant in variants:
    a = compare.read_run(os.path.join(stacked, variant.name))
    b = compare.read_run(os.path.join(separate, variant.name))
    assert a.status == b.status
    assert a.curves["val_accuracy"][0].tolist() == b.curves["val_accuracy"][0].tolist()
    assert a.curves["val_accuracy"][1] == pytest.approx(b.curves["val_accuracy"][1], abs=1e-6)
    for key in ("best_val_accuracy", "test_accuracy"):
      assert a.metrics[key] == pytest.approx(b.metrics[key], abs=1e-6)
  assert len(a.curves["val_accuracy"][0]) == 0 and a.status == "diverged"   # lr=50

  # A member's summary has the loop's keys (plus how it was trained), and its verdict.
  name = variants[0].name
  summaries = [json.load(open(os.path.join(root, name, "summary.json")))
               for root in (stacked, separate)]
  assert set(summaries[1]) <= set(summaries[0])
  assert set(summaries[0]) - set(summaries[1]) == {"trained_as"}
  assert summaries[0]["trained_as"] == {"members": 2, "index": 0}
  assert summaries[0]["config"] == summaries[1]["config"]
  assert summaries[0]["best"]["val_accuracy"] == pytest.approx(
      summaries[1]["best"]["val_accuracy"], abs=1e-6)
  diverged = open(os.path.join(stacked, variants[1].name, "verdict.txt")).read()
  assert diverged.startswith("diverged: training diverged in epoch 1 at step ")

  # Re-launching skips every finished variant (done and diverged), training nothing.
  lines = []
  outcomes = launcher.run_ablation(stacked, units, cache=cache, log=lines.append)
  assert [o.status for o in outcomes] == ["skipped:done", "skipped:diverged"]
  assert lines[0] == f"[1/1] skip {variants[0].name}: done already"

  # compare: only the learning rate differs; the diverged run is last, with no numbers.
  table = compare.compare([compare.read_run(os.path.join(stacked, v.name)) for v in variants])
  assert table.differing == ["optimizer.learning_rate"] and not table.grouped
  header, rows = compare.table_rows(table)
  assert [row[0] for row in rows] == ["0.01", "50"]
  assert rows[1][1:7] == ["-", "-", "-", "0/2", rows[1][5], "diverged"]

  # A member's workdir is not resumed as a separate run (its checkpoint holds the population's
  # optimizer state): one clear error naming the way to continue it.
  from research import train
  from research.train import resume
  member = variants[0]
  with pytest.raises(resume.ResumeError, match="trained as one member of a population"):
    train.train_and_evaluate(member.config, os.path.join(stacked, member.name),
                             log=lambda _: None)
