r"""Redraws a run's babysitting figures and verdict from its workdir alone.

    python scripts/make_figures.py --workdir=/tmp/digits_mlp

Reads <workdir>/metrics.jsonl, histograms.jsonl, first_layer.npz; writes <workdir>/figures/*.png
and <workdir>/verdict.txt, and prints their paths and the verdict (how to read them:
research/monitor/README.md). A figure that cannot be written is one warning line, not an error.
"""
import sys

from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to redraw.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from research import monitor
  try:
    paths = monitor.make_figures(_WORKDIR.value,
                                 warn=lambda line: print(f"warning: {line}", file=sys.stderr))
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  if not monitor.read_metrics(_WORKDIR.value):
    print(f"no metrics.jsonl records in {_WORKDIR.value}: nothing to draw")
    return 1
  for path in paths:
    print(path)
  print("verdict:")
  for line in monitor.write_verdict(_WORKDIR.value):
    print("  " + line)
  return 0


if __name__ == "__main__":
  app.run(main)
