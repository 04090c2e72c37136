"""research.playbook's core: the verdict rule on synthetic numbers, the registry, CLAIMS.md, and
the command line's user errors (the claims' own experiments: tests/test_playbook_claims.py)."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from research.playbook import core, registry, report
from tests.train_helpers import REPO

R, N, U = core.REPRODUCED, core.NOT_REPRODUCED, core.INCONCLUSIVE  # U: undecided


# --- The verdict rule ----------------------------------------------------------------------------


def test_band_is_mean_plus_minus_two_standard_errors():
  b = core.band([1.0, 2.0, 3.0])
  assert b.mean == 2.0 and b.n == 3
  assert b.sd == pytest.approx(1.0)
  assert (b.low, b.high) == pytest.approx((2.0 - 2 / math.sqrt(3), 2.0 + 2 / math.sqrt(3)))
  assert core.band([5.0]) == core.Band(5.0, 0.0, 1, 5.0, 5.0)


@pytest.mark.parametrize("values, op, threshold, expected", [
    # A claim that holds beyond the spread, and the same numbers failing the opposite claim.
    ([0.30, 0.32, 0.31], ">", 0.0, R),
    ([0.30, 0.32, 0.31], "<", 0.0, N),
    ([-0.30, -0.32, -0.31], ">", 0.0, N),
    ([-0.30, -0.32, -0.31], "<", 0.0, R),
    # Seeds on both sides, or a spread too wide for the mean: undecided.
    ([0.5, -0.4, 0.3], ">", 0.0, U),
    ([0.10, 0.01, 0.02], ">", 0.0, U),     # mean 0.043, 2 se = 0.058: the band holds 0
    # One value (a deterministic experiment) is compared as it is; equal is not greater.
    ([2.0], ">", 1.5, R),
    ([1.5], ">", 1.5, N),
    ([1.0], "<", 1.5, R),
    # Thresholds other than 0 (e.g. a slope in (1.5, 2.5)).
    ([2.00, 2.01, 1.99], ">", 1.5, R),
    ([2.00, 2.01, 1.99], "<", 2.5, R),
    ([2.00, 2.01, 1.99], "<", 1.5, N),
])
def test_decide(values, op, threshold, expected):
  assert core.decide(values, op, threshold) == expected


def test_decide_infinities_use_unanimity_and_nan_is_inconclusive():
  assert core.decide([math.inf, math.inf], ">", 0.7) == R       # never reached: +inf
  assert core.decide([math.inf, 0.1], ">", 0.7) == U
  assert core.decide([-math.inf, 0.1], ">", 0.7) == N
  assert core.decide([1.0, math.nan], ">", 0.0) == U


def test_decide_refuses_bad_input():
  with pytest.raises(ValueError, match="op='>=' is unknown; known: >, <"):
    core.decide([1.0], ">=", 0.0)
  with pytest.raises(ValueError, match="at least one value"):
    core.decide([], ">", 0.0)
  with pytest.raises(ValueError, match="has no value"):
    core.condition("empty", [], ">", 0.0)


def test_claim_verdict_combines_its_conditions():
  assert core.combine([R, R]) == R
  assert core.combine([R, N, U]) == N
  assert core.combine([R, U]) == U
  with pytest.raises(ValueError):
    core.combine([])
  holds = core.condition("a", [1.0, 1.1], ">", 0.0)
  fails = core.condition("b", [1.0, 1.1], "<", 0.0, hint="why")
  outcome = core.Outcome([holds, fails], "m", "f.png", {})
  assert outcome.verdict == N
  assert fails.describe() == "b = 1.05 ± 0.0707 (n=2) < 0"
  assert fails.to_dict()["verdict"] == N and fails.to_dict()["hint"] == "why"


def test_stat_and_fmt():
  assert core.stat([0.5]) == "0.5"
  assert core.stat([1.0, 3.0]) == "2 ± 1.41 (n=2)"
  assert core.stat([math.inf, 1.0]) == "[inf, 1]"
  assert core.fmt(1.234e-5) == "1.23e-05"
  assert core.fmt(0.1234) == "0.123"
  assert core.stats({"a": [0.5], "b": [1.0, 3.0]}) == "a 0.5, b 2 ± 1.41 (n=2)"
  columns = np.array([[1.0, 0.5], [3.0, 0.5]])     # (seeds, variants)
  assert core.stats(zip(["x", "y"], columns.T)) == "x 2 ± 1.41 (n=2), y 0.5 ± 0 (n=2)"


# --- The registry --------------------------------------------------------------------------------


def test_registry_has_every_claim_in_order():
  assert len(registry.NAMES) == 25 and len(set(registry.NAMES)) == 25
  for number, name in enumerate(registry.NAMES, 1):
    claim = registry.get(name)
    assert (claim.number, claim.name) == (number, name)
    assert claim.statement and claim.section and claim.experiment and claim.rule
    assert set(claim.settings) == set(core.MODES)


def test_parse_names():
  assert registry.parse("bowl,init") == ["init", "bowl"]         # the playbook's order
  assert registry.parse("init,init") == ["init"]
  assert registry.parse("all") == list(registry.NAMES) == registry.parse(None)
  with pytest.raises(ValueError) as error:
    registry.parse("init,bowls,foo")
  assert str(error.value) == ("unknown claims 'bowls', 'foo'; known: " + ", ".join(registry.NAMES))
  with pytest.raises(ValueError, match="no claim given"):
    registry.parse(" , ")


# --- Running claims and CLAIMS.md ----------------------------------------------------------------


def _fake_claim(run, name="bowl", number=16):
  settings = {mode: {"seeds": 2} for mode in core.MODES}
  return core.Claim(number, name, "A fake claim", "Part 3, Somewhere", "the seed's words",
                    "what we ran", "the rule", settings, run)


def _fake_run(context):
  conditions = [core.condition("gain", [0.2, 0.3], ">", 0.0),
                core.condition("loss | ratio", [3.0, 3.2], "<", 2.0, hint="too slow")]
  with open(context.figure, "wb") as f:
    f.write(b"png")
  return core.Outcome(conditions, "gain 0.25 ± 0.07 (n=2)", context.figure, {"x": [1, 2]},
                      ("a post-hoc look",))


def test_run_claim_writes_result_and_claims_md(tmp_path):
  os.makedirs(tmp_path / "figures")
  result = report.run_claim(_fake_claim(_fake_run), "short", str(tmp_path), log=lambda _: None)
  assert result.verdict == N and result.error is None
  report.save_result(str(tmp_path), result)
  row = json.loads((tmp_path / "results" / "bowl.json").read_text())
  assert row["verdict"] == N and row["mode"] == "short" and row["settings"] == {"seeds": 2}
  assert row["figure"] == "figures/bowl.png"
  assert [c["verdict"] for c in row["conditions"]] == [R, N]
  assert row["conditions"][1]["band"] == pytest.approx([3.1 - 0.2, 3.1 + 0.2])
  text = open(report.write_claims(str(tmp_path), 12.0)).read()
  table_row = next(line for line in text.splitlines() if line.startswith("| 16 |"))
  assert table_row == (
      "| 16 | bowl: A fake claim | the seed's words | gain 0.25 ± 0.07 (n=2) (short, "
      f"{row['wall_s']:.0f} s) | **NOT REPRODUCED** (loss \\| ratio < 2: not reproduced) | "
      "[bowl](figures/bowl.png) |")
  assert "- likely reason (loss | ratio): too slow" in text
  assert "- a post-hoc look" in text and "![bowl](figures/bowl.png)" in text
  assert "1 claims: 1 NOT REPRODUCED" in text


def test_a_claim_that_raises_is_an_error_row_and_the_others_keep_theirs(tmp_path):
  def broken(context):
    raise RuntimeError("the experiment broke")

  os.makedirs(tmp_path / "figures")
  good = report.run_claim(_fake_claim(_fake_run, "init", 14), "short", str(tmp_path),
                          log=lambda _: None)
  report.save_result(str(tmp_path), good)
  bad = report.run_claim(_fake_claim(broken), "tiny", str(tmp_path), log=lambda _: None)
  assert bad.verdict == core.ERROR and "RuntimeError: the experiment broke" in bad.error
  report.save_result(str(tmp_path), bad)
  text = open(report.write_claims(str(tmp_path))).read()
  rows = [line for line in text.splitlines() if line.startswith("| 1")]
  assert [r.split(" | ")[0] for r in rows] == ["| 14", "| 16"]
  assert "**ERROR** (error: RuntimeError: the experiment broke)" in rows[1]
  assert "1 NOT REPRODUCED, 1 ERROR" in text and "mode: short, tiny" in text


def test_run_claims_refuses_an_unknown_mode(tmp_path):
  with pytest.raises(ValueError, match="mode='long' is unknown; known: tiny, short, full"):
    report.run_claims(["bowl"], "long", str(tmp_path))


# --- The command line: user errors ---------------------------------------------------------------


def _reproduce(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "reproduce.py"), *args],
                        cwd=REPO, capture_output=True, text=True, timeout=300)


def test_unknown_claim_is_one_line_exit_1_and_nothing_written(tmp_path):
  workdir = tmp_path / "claims"
  done = _reproduce(f"--workdir={workdir}", "--claims=init,bogus")
  assert done.returncode == 1
  assert done.stderr.strip() == ("reproduce.py: error: unknown claim 'bogus'; known: "
                                 + ", ".join(registry.NAMES))
  assert "Traceback" not in done.stderr + done.stdout
  assert not workdir.exists()


def test_full_and_tiny_together_is_a_user_error(tmp_path):
  done = _reproduce(f"--workdir={tmp_path / 'x'}", "--full", "--tiny")
  assert done.returncode == 1
  assert done.stderr.strip() == ("reproduce.py: error: --full and --tiny exclude each other; "
                                 "give one (or neither: short)")
  assert not (tmp_path / "x").exists()


def test_numbers_survive_json(tmp_path):
  # Results hold numpy scalars at times: they are written as plain floats.
  os.makedirs(tmp_path / "figures")

  def run(context):
    with open(context.figure, "wb") as f:
      f.write(b"png")
    return core.Outcome([core.condition("q", np.float32(1.5), ">", 1.0)], "q",
                        context.figure, {"q": np.float64(1.5)})

  result = report.run_claim(_fake_claim(run), "tiny", str(tmp_path), log=lambda _: None)
  report.save_result(str(tmp_path), result)
  assert json.loads((tmp_path / "results" / "bowl.json").read_text())["numbers"] == {"q": 1.5}
