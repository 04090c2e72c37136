"""Every claim's experiment in its tiny mode (seconds each): it runs through the engine, decides a
verdict by its rule, and writes its row and its figure. The short mode of scripts/reproduce.py,
every claim end to end, is the slow test at the bottom.

The tiny modes check the plumbing, not the playbook: their verdicts are not asserted (3 updates
do not decide whether annealing helps). Their time is almost all XLA compilation (~30 programs of
the engine, the checker and the figures' helpers); the suite's compilation cache
(tests/conftest.py) serves them like every other test.
"""
import json
import os
import struct
import subprocess
import sys

import pytest

from research.playbook import core, registry, report
from tests.train_helpers import REPO


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("claims"))


def png_size(path: str) -> tuple[int, int]:
  """(width, height) from a PNG's IHDR chunk."""
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
  return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("name", registry.NAMES)
def test_tiny_mode_writes_row_and_figure(workdir, name):
  claim = registry.get(name)
  result = report.run_claim(claim, "tiny", workdir, log=lambda _: None)
  assert result.error is None, result.error
  assert result.verdict in core.VERDICTS
  outcome = result.outcome
  assert outcome.conditions and outcome.measured
  for condition in outcome.conditions:
    assert condition.op in core.OPS and condition.values and condition.text
    assert condition.verdict in core.VERDICTS
  # The figure: a real PNG of a size a person can read, where CLAIMS.md links it.
  assert outcome.figure == report.figure_path(workdir, name)
  width, height = png_size(outcome.figure)
  assert width >= 500 and height >= 300, (width, height)
  assert os.path.getsize(outcome.figure) > 10_000
  # The row: its JSON and its line of the table.
  report.save_result(workdir, result)
  with open(report.result_path(workdir, name)) as f:
    row = json.load(f)
  assert row["name"] == name and row["number"] == claim.number and row["mode"] == "tiny"
  assert row["verdict"] == result.verdict and row["figure"] == f"figures/{name}.png"
  assert [c["verdict"] for c in row["conditions"]] == [c.verdict for c in outcome.conditions]
  text = report.claims_markdown(report.load_results(workdir))
  line = next(row for row in text.splitlines()
              if row.startswith(f"| {claim.number} | {name}: "))
  assert f"**{result.verdict}**" in line and f"[{name}](figures/{name}.png)" in line
  assert outcome.measured.split(";")[0].replace("|", "\\|") in line


@pytest.mark.slow
def test_short_mode_of_the_script(tmp_path):
  """``scripts/reproduce.py`` in its default (short) mode: every claim, CLAIMS.md, 25 figures."""
  workdir = tmp_path / "claims"
  done = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "reproduce.py"),
                         f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True,
                        timeout=3600)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  text = (workdir / "CLAIMS.md").read_text()
  rows = [row for row in text.splitlines() if row.startswith("| ") and row[2:3].isdigit()]
  assert len(rows) == 25
  for name in registry.NAMES:
    assert png_size(str(workdir / "figures" / f"{name}.png"))[0] >= 500
    row = json.loads((workdir / "results" / f"{name}.json").read_text())
    assert row["mode"] == "short" and row["verdict"] in core.VERDICTS
