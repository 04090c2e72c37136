"""Running claims and writing ``CLAIMS.md``.

Layout of a workdir::

    CLAIMS.md                 the table (claim, the seed's words, measured, verdict, figure) and
                              one section per claim: statement, experiment, rule, conditions
    figures/<name>.png        one figure per claim
    results/<name>.json       everything a claim measured (conditions, numbers, wall time, mode)
    runs/<name>/              the engine's own workdirs of that claim's runs

``CLAIMS.md`` is written from every ``results/*.json`` present, so running a subset
(``--claims=init,bowl``) refreshes those rows and keeps the others (each row names its mode).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import time
import traceback
from typing import Callable, Sequence

from research.playbook import core, registry
from research.train import distributed

CLAIMS_FILE = "CLAIMS.md"
RESULTS_DIR = "results"
FIGURES_DIR = "figures"
RUNS_DIR = "runs"


def figure_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, FIGURES_DIR, f"{name}.png")


def result_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, RESULTS_DIR, f"{name}.json")


def run_claim(claim: core.Claim, mode: str, workdir: str,
              log: Callable[[str], None] = print) -> core.Result:
  """Runs one claim in ``mode`` (its runs under ``<workdir>/runs/<name>``); an exception becomes
  an ``ERROR`` result with its traceback (the other claims still run)."""
  context = claim.context(mode, os.path.join(workdir, RUNS_DIR, claim.name),
                          figure_path(workdir, claim.name), log)
  os.makedirs(context.workdir, exist_ok=True)
  start = time.perf_counter()
  try:
    outcome = claim.run(context)
  except Exception:  # noqa: BLE001 - one broken claim must not hide the others' results
    return core.Result(claim, None, core.ERROR, time.perf_counter() - start, mode,
                       traceback.format_exc())
  return core.Result(claim, outcome, outcome.verdict, time.perf_counter() - start, mode)


def result_dict(result: core.Result) -> dict:
  """A result as JSON (what ``results/<name>.json`` holds and ``CLAIMS.md`` is written from)."""
  claim, outcome = result.claim, result.outcome
  out = {"number": claim.number, "name": claim.name, "title": claim.title,
         "section": claim.section, "statement": claim.statement,
         "experiment": claim.experiment, "rule": claim.rule, "mode": result.mode,
         "settings": claim.settings[result.mode], "verdict": result.verdict,
         "wall_s": round(result.wall_s, 2),
         "finished": datetime.datetime.now().isoformat(timespec="seconds"),
         "error": result.error}
  if outcome is not None:
    out.update(measured=outcome.measured,
               figure=os.path.join(FIGURES_DIR, os.path.basename(outcome.figure)),
               conditions=[c.to_dict() for c in outcome.conditions], numbers=outcome.numbers,
               notes=list(outcome.notes))
  return out


def save_result(workdir: str, result: core.Result) -> str:
  path = result_path(workdir, result.claim.name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(result_dict(result), f, indent=1, default=float)
  os.replace(path + ".tmp", path)
  return path


def load_results(workdir: str) -> list[dict]:
  """Every ``results/<name>.json`` of ``workdir`` for a known claim, in the playbook's order."""
  out = []
  for name in registry.NAMES:
    path = result_path(workdir, name)
    if os.path.exists(path):
      with open(path) as f:
        out.append(json.load(f))
  return out


def _cell(text: str) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def _commit() -> str:
  try:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return subprocess.run(["git", "-C", root, "describe", "--always", "--dirty"],
                          capture_output=True, text=True, timeout=5).stdout.strip() or "?"
  except (OSError, subprocess.SubprocessError):
    return "?"


def _reason(row: dict) -> str:
  """What failed: the conditions that did not hold (with their hints), or the error's last line."""
  if row["verdict"] == core.ERROR:
    lines = (row.get("error") or "").strip().splitlines()
    return f"error: {lines[-1] if lines else '?'}"
  failed = [c for c in row.get("conditions", []) if c["verdict"] != core.REPRODUCED]
  return "; ".join(f"{c['text']} {c['op']} {c['threshold']:g}: {c['verdict'].lower()}"
                   for c in failed)


def _condition_line(c: dict) -> str:
  values = ", ".join(core.fmt(v) for v in c["values"])
  band = (f"[{core.fmt(c['band'][0])}, {core.fmt(c['band'][1])}]"
          if all(isinstance(b, (int, float)) for b in c["band"]) else "-")
  return (f"| {_cell(c['text'])} | {c['op']} {core.fmt(c['threshold'])} | "
          f"{core.stat(c['values'])} | {band} | {values} | **{c['verdict']}** |")


def claims_markdown(rows: Sequence[dict], wall_s: float | None = None) -> str:
  """The text of ``CLAIMS.md`` for result rows (:func:`load_results`)."""
  counts = {v: sum(r["verdict"] == v for r in rows) for v in (*core.VERDICTS, core.ERROR)}
  modes = sorted({r["mode"] for r in rows})
  lines = ["# The playbook's claims, reproduced", "",
           "Every claim of the CS231n notes on training (Part 3: Learning and Evaluation; Part 2: "
           "initialization and batch norm) put to the test with the project's own tools. Each "
           "verdict follows the rule written in the claim's module before any number was seen "
           "(research/playbook/README.md): for every condition `q > t` (or `<`), the band mean "
           "± 2 standard errors over the seeds must lie wholly on the claimed side "
           "(REPRODUCED) or wholly on the other (NOT REPRODUCED); otherwise INCONCLUSIVE.", "",
           f"- {len(rows)} claims: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n),
           f"- mode: {', '.join(modes)} (`python3 scripts/reproduce.py"
           f"{' --full' if modes == ['full'] else ''}`); commit {_commit()}; "
           f"{platform.node()}, {os.cpu_count()} CPUs",
           ]
  if wall_s is not None:
    lines.append(f"- wall time of this run: {wall_s:.0f} s; per claim in the table")
  lines += ["", "| # | claim | what the seed says | what we measured (mean ± sd over seeds) | "
            "verdict | figure |", "|---|---|---|---|---|---|"]
  for r in rows:
    figure = f"[{r['name']}]({r['figure']})" if r.get("figure") else "-"
    verdict = f"**{r['verdict']}**"
    if r["verdict"] != core.REPRODUCED:
      verdict += f" ({_cell(_reason(r))})"
    lines.append(f"| {r['number']} | {r['name']}: {_cell(r['title'])} | {_cell(r['statement'])} "
                 f"| {_cell(r.get('measured', '-'))} ({r['mode']}, {r['wall_s']:.0f} s) | "
                 f"{verdict} | {figure} |")
  for r in rows:
    lines += ["", f"## {r['number']}. {r['title']} (`{r['name']}`): {r['verdict']}", "",
              f"**The seed** ({r['section']}): {r['statement']}", "",
              f"**Experiment** ({r['mode']} mode: "
              + ", ".join(f"{k}={v}" for k, v in r["settings"].items()) + f"): {r['experiment']}",
              "", f"**Rule** (written before the numbers): {r['rule']}", ""]
    if r["verdict"] == core.ERROR:
      lines += ["The experiment raised:", "", "```", (r.get("error") or "").strip(), "```"]
      continue
    lines += [f"**Measured**: {r['measured']}", "",
              "| condition | claimed | mean ± sd | band (± 2 se) | values | verdict |",
              "|---|---|---|---|---|---|"]
    lines += [_condition_line(c) for c in r["conditions"]]
    hints = [c for c in r["conditions"] if c["verdict"] != core.REPRODUCED and c.get("hint")]
    if hints:
      lines += [""] + [f"- likely reason ({c['text']}): {c['hint']}" for c in hints]
    if r.get("notes"):
      lines += ["", "Observations outside the rule (not part of the verdict):", ""]
      lines += [f"- {note}" for note in r["notes"]]
    lines += ["", f"![{r['name']}]({r['figure']})"]
  return "\n".join(lines) + "\n"


def write_claims(workdir: str, wall_s: float | None = None) -> str:
  """Writes ``<workdir>/CLAIMS.md`` from every result in ``workdir``; returns its path."""
  path = os.path.join(workdir, CLAIMS_FILE)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(claims_markdown(load_results(workdir), wall_s))
  os.replace(path + ".tmp", path)
  return path


def run_claims(names: Sequence[str], mode: str, workdir: str,
               log: Callable[[str], None] = print) -> list[core.Result]:
  """Runs the claims ``names`` in ``mode`` into ``workdir``; after each one its result is saved
  and ``CLAIMS.md`` rewritten (a killed run leaves the claims finished so far)."""
  if mode not in core.MODES:
    raise ValueError(f"mode={mode!r} is unknown; known: {', '.join(core.MODES)}.")
  claims = [registry.get(name) for name in names]
  results = []
  start = time.perf_counter()
  for claim in claims:
    log(f"[{claim.number:2d}/{len(registry.NAMES)}] {claim.name}: {claim.title} ...")
    result = run_claim(claim, mode, workdir, log)
    # Several processes: each ran the claim (its training data parallel over all of them);
    # process 0's result is written, by it alone, while the others wait.
    distributed.decide(save_result, workdir, result)
    distributed.decide(write_claims, workdir, time.perf_counter() - start)
    detail = result.outcome.measured if result.outcome else (result.error or "").strip()
    log(f"      {result.verdict} in {result.wall_s:.1f} s: {detail.splitlines()[-1]}")
    results.append(result)
  return results
