"""What a run keeps on disk to be continued: its config, and records that match its checkpoint.

* ``config.json``: saved by a fresh run; a resumed run must have the same experiment (the fields
  under :data:`RESUME_KEYS`), else :func:`check_resumable` names every differing field with both
  values. Fields outside them (``train.num_epochs``, monitoring, checkpoint policy) may change: a
  finished run can be continued for more epochs.
* ``metrics.jsonl`` / ``histograms.jsonl``: rows written after the checkpoint a run resumes from
  were lost with the kill and are written again, so :func:`truncate_records` drops them (all rows
  when there is no checkpoint). A torn LAST line (a power cut in the middle of a write) is dropped
  with a message; a broken line elsewhere is an error naming the file and line.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

from research.launch.config_tree import flatten_config

CONFIG_FILE = "config.json"
RECORD_FILES = ("metrics.jsonl", "histograms.jsonl")
#: Changing these between a run and its resumption would make the checkpoint meaningless.
RESUME_KEYS = ("data", "model", "optimizer", "loss", "averaging", "seed")


class ResumeError(RuntimeError):
  """A workdir whose saved config or records do not allow this run to continue it."""


def config_differences(saved: dict, current: dict, keys: tuple[str, ...] = RESUME_KEYS
                       ) -> list[str]:
  """``"<field>: <saved> (saved) vs <current> (now)"`` for every differing field under ``keys``.

  Tuples and lists compare equal (JSON has no tuples).
  """
  saved_flat = flatten_config({k: saved.get(k) for k in keys})
  current_flat = flatten_config({k: current.get(k) for k in keys})
  missing = object()
  lines = []
  for path in sorted(saved_flat.keys() | current_flat.keys()):
    a, b = saved_flat.get(path, missing), current_flat.get(path, missing)
    if _normal(a) != _normal(b):
      show = lambda v: "(absent)" if v is missing else json.dumps(_normal(v))
      lines.append(f"{path}: {show(a)} (saved) vs {show(b)} (now)")
  return lines


def _normal(value: Any) -> Any:
  return list(value) if isinstance(value, tuple) else value


def read_saved_config(workdir: str) -> dict | None:
  """The run's saved ``config.json`` (None when absent).

  Raises:
    ResumeError: the file is not valid JSON (names it).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ResumeError(f"{path} is not a readable config ({type(e).__name__}: {e}); restore it, "
                      "or move the workdir away to start afresh.") from None


#: Marks the workdir of a member of a population (research.ablate writes it): its checkpoint holds
#: the population's optimizer state, which the member's own config may not rebuild (its loss.l2
#: trained as weight decay, a weight decay only other members have).
MEMBER_MARK = "members.json"


def check_not_a_member(workdir: str) -> None:
  """Refuses to resume, as a separate run, a workdir trained as a member of a population.

  Raises:
    ResumeError: ``workdir`` holds :data:`MEMBER_MARK`.
  """
  if os.path.exists(os.path.join(workdir, MEMBER_MARK)):
    raise ResumeError(
        f"{workdir} was trained as one member of a population ({MEMBER_MARK}): continue it with "
        "the command that made it (scripts/ablate.py), or train this config in another --workdir.")


def check_resumable(workdir: str, config: Any) -> dict | None:
  """Refuses a workdir that holds a different experiment; returns its saved config (or None).

  Raises:
    ResumeError: the saved config differs in an experiment field (every one is named).
  """
  saved = read_saved_config(workdir)
  if saved is None:
    return None
  changed = config_differences(saved, json.loads(config.to_json()))
  if changed:
    raise ResumeError(
        f"{workdir} holds a run with a different config ("
        f"{'1 field differs' if len(changed) == 1 else f'{len(changed)} fields differ'}: "
        f"{'; '.join(changed)}); resume it with its "
        f"own config (--config={os.path.join(workdir, CONFIG_FILE)}) or choose another --workdir.")
  return saved


def save_config(workdir: str, config: Any) -> None:
  """Writes ``config.json`` atomically (a kill never leaves half a file)."""
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + ".tmp", "w") as f:
    f.write(config.to_json(indent=2))
  os.replace(path + ".tmp", path)


def read_records(path: str, log: Callable[[str], None] | None = None) -> list[dict]:
  """The rows of a JSON-lines file; a torn last line is dropped (and reported through ``log``).

  Raises:
    ResumeError: a broken line that is not the last one (names the file and the line).
  """
  with open(path) as f:
    lines = f.read().split("\n")
  rows = []
  numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
  for position, (number, line) in enumerate(numbered):
    try:
      rows.append(json.loads(line))
    except ValueError:
      if position == len(numbered) - 1:
        if log:
          log(f"{path}: line {number} is torn (the last write was cut off); dropped it")
        break
      raise ResumeError(f"{path}: line {number} is not valid JSON ({line[:60]!r}); the file is "
                        "damaged: repair or delete that line to resume.") from None
  return rows


def truncate_records(workdir: str, after_epoch: int,
                     log: Callable[[str], None] | None = None) -> None:
  """Drops record rows of epochs after ``after_epoch`` (0: every row) from the record files."""
  for name in RECORD_FILES:
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
      continue
    rows = read_records(path, log)
    kept = [row for row in rows if float(row.get("epoch", 0)) <= after_epoch + 1e-9]
    with open(path + ".tmp", "w") as f:
      f.writelines(json.dumps(row) + "\n" for row in kept)
    os.replace(path + ".tmp", path)

