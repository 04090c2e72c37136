r"""The playbook's claims, reproduced: every claim's experiment, its verdict and its figure.

    python3 scripts/reproduce.py --workdir=claims                    # every claim, short mode
    python3 scripts/reproduce.py --workdir=claims --claims=init,bowl # a subset
    python3 scripts/reproduce.py --workdir=claims_full --full        # more seeds and epochs

Writes ``<workdir>/CLAIMS.md`` (the table: claim, what the seed says, what we measured as
mean ± sd over seeds, verdict, figure; then one section per claim with its experiment, its rule
and the numbers that decided it), ``<workdir>/figures/<claim>.png``, ``<workdir>/results/
<claim>.json`` and the engine's own run directories under ``<workdir>/runs/<claim>``. Running a
subset into an existing workdir refreshes those claims and keeps the others' rows. JAX's
compilation cache is the project's (research.launch: ``~/.cache/trainlab/jax``,
``$TRAINLAB_COMPILATION_CACHE`` moves it, ``=off`` disables it): a second run compiles almost
nothing.

The claims and their rules: research/playbook/README.md. Exit status: 0 every claim ran (whatever
its verdict: NOT REPRODUCED is a result), 1 a user mistake (an unknown claim, a bad workdir;
nothing is written), 2 a claim's experiment raised (its row says ERROR, the others still ran),
130 interrupted.
"""
import os
import time

from absl import flags

from research import launch

_WORKDIR = flags.DEFINE_string("workdir", None, "Where CLAIMS.md, figures/ and runs/ go.")
_CLAIMS = flags.DEFINE_string("claims", "all", "Comma-separated claim names (default: all).")
_FULL = flags.DEFINE_boolean("full", False, "The long versions: more seeds and epochs.")
_TINY = flags.DEFINE_boolean("tiny", False, "The test suite's versions (seconds per claim): "
                             "checks the plumbing, decides nothing.")


def main() -> int:
  from research.playbook import core, registry
  if _WORKDIR.value is None:
    raise launch.UserError("--workdir is required, e.g. --workdir=claims")
  workdir = launch.checked_workdir(_WORKDIR.value)
  names = launch.validated(registry.parse, _CLAIMS.value)
  if _FULL.value and _TINY.value:
    raise launch.UserError("--full and --tiny exclude each other; give one (or neither: short)")
  mode = "full" if _FULL.value else "tiny" if _TINY.value else "short"

  from research.playbook import report
  os.makedirs(workdir, exist_ok=True)
  print(f"{len(names)} claim(s), {mode} mode, into {workdir}", flush=True)
  start = time.perf_counter()
  results = report.run_claims(names, mode, workdir, log=lambda line: print(line, flush=True))
  from research.train import distributed
  path = distributed.decide(report.write_claims, workdir, time.perf_counter() - start)
  counts = {v: sum(r.verdict == v for r in results) for v in (*core.VERDICTS, core.ERROR)}
  print(f"{path}: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        + f" in {time.perf_counter() - start:.0f} s", flush=True)
  return launch.EXIT_FAILED if counts[core.ERROR] else launch.EXIT_OK


if __name__ == "__main__":
  launch.run(main, multiprocess=True)
