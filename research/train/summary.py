"""``summary.json``: one self-contained record of a run, enough to compare runs without their code.

Written at the end of every run, whatever its end (``status``): ``done``, ``diverged``,
``interrupted`` (Ctrl-C / SIGTERM; a SIGKILLed run has no summary or an older one) or ``stopped``
(``on_epoch_end`` asked to stop, e.g. search pruning). It holds the config, the metrics at the best
and at the last epoch, the test metrics of the best checkpoint's parameters (raw, and EMA / Polyak
where averaging is on), the wall time, the git commit and the library versions.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import subprocess
from typing import Any

SUMMARY_FILE = "summary.json"
STATUSES = ("done", "diverged", "interrupted", "stopped")
#: Libraries whose versions decide a run's numbers.
LIBRARIES = ("jax", "jaxlib", "optax", "flax", "orbax-checkpoint", "numpy", "ml-collections",
             "scikit-learn")


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
  """The commit of the checkout the ``research`` package runs from (``+dirty`` when it has
  uncommitted changes); None outside a git checkout."""
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ("+dirty" if dirty else "") if commit else None


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
  """``{library: version}`` of :data:`LIBRARIES` (and Python)."""
  versions = {"python": platform.python_version()}
  for name in LIBRARIES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return versions


def write_summary(workdir: str, summary: dict[str, Any]) -> str:
  """Writes ``summary`` (plus commit and versions) atomically as ``<workdir>/summary.json``.

  Non-finite numbers are written as JSON ``null`` (a bare NaN is not valid JSON).
  """
  if summary.get("status") not in STATUSES:
    raise ValueError(f"summary status {summary.get('status')!r} is not one of {STATUSES}")
  record = {**summary, "git_commit": git_commit(), "versions": library_versions()}
  path = os.path.join(workdir, SUMMARY_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(_finite_or_null(record), f, indent=2, allow_nan=False)
  os.replace(path + ".tmp", path)
  return path


def read_summary(workdir: str) -> dict[str, Any] | None:
  """The run's summary, or None when it has none (or an unreadable one)."""
  try:
    with open(os.path.join(workdir, SUMMARY_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _finite_or_null(value: Any) -> Any:
  if isinstance(value, dict):
    return {str(k): _finite_or_null(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite_or_null(v) for v in value]
  if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
    return None
  if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
    return _finite_or_null(value.item())
  return value
