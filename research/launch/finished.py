"""Is a run already finished? Read from its ``summary.json`` with the standard library only, so
``scripts/train.py`` says so at once instead of loading JAX to train nothing."""
from __future__ import annotations

import json
import os
from typing import Any


def finished_run_message(workdir: str, config: Any) -> str | None:
  """Why ``workdir`` needs no training (a finished run of this config), or None.

  Finished: ``summary.json`` says ``done`` after ``config.train.num_epochs`` epochs, and the saved
  ``config.json`` is this config. Anything else (no summary, another status, more epochs asked
  for, another config) trains or resumes as usual (and a different config is refused there).
  """
  try:
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
    with open(os.path.join(workdir, "config.json")) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return None
  if summary.get("status") != "done" or summary.get("epochs") != int(config.train.num_epochs):
    return None
  if _normal(saved) != _normal(json.loads(config.to_json())):
    return None
  best, test = summary.get("best_val_accuracy"), summary.get("test_accuracy")
  scores = ""
  if isinstance(best, (int, float)):
    scores = f": best val accuracy {best:.4f} (epoch {summary.get('best_epoch')})"
    if isinstance(test, (int, float)):
      scores += f", test accuracy {test:.4f}"
  return (f"{workdir} holds a finished run of this config ({summary['epochs']} epochs{scores}); "
          f"nothing to train. Its results: {os.path.join(workdir, 'summary.json')}, "
          f"verdict.txt, figures/. To train again choose another --workdir; to train longer "
          f"raise --config.train.num_epochs.")


def _normal(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _normal(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_normal(v) for v in value]
  return value
