"""The ``--config`` flag of every entry point, with a clear error for a misspelt override.

``ml_collections.config_flags`` applies ``--config.a.b=value`` overrides while the flag is being
DEFINED (at import of the script), so an override naming no field ends in a traceback about a
``KeyError: 'b'``. ``define_config_file`` checks every ``--config.<path>`` override of the command
line against the config file first, and exits (status 2, or the script's own status for a bad
config) with a message naming the override and
the fields that exist::

    unknown config field 'gradcheck.bogus' in --config.gradcheck.bogus=1;
    config.gradcheck has: burn_in_steps, check_regularization_apart, coords_per_leaf, num_examples
"""
from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Sequence

from ml_collections import config_flags

FLAG = "config"
USAGE_ERROR = 2


def _config_path(argv: Sequence[str], default_path: str) -> str:
  path = default_path
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{FLAG}="):
      path = arg.split("=", 1)[1]
    elif arg == f"--{FLAG}" and i + 1 < len(argv):
      path = argv[i + 1]
  return path


def _load(path: str) -> Any | None:
  """``get_config()`` of a config file, or None when it cannot be loaded here (then
  ml_collections reports the problem itself)."""
  if not os.path.isfile(path):
    return None
  spec = importlib.util.spec_from_file_location("_config_under_check", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    return module.get_config()
  except Exception:  # noqa: BLE001 - ml_collections will raise its own, clearer error
    return None


def _override_paths(argv: Sequence[str]) -> list[tuple[str, str]]:
  """``[(dotted_path, argument)]`` of the ``--config.<path>[=value]`` arguments."""
  paths = []
  for arg in argv:
    for prefix in (f"--{FLAG}.", f"--no{FLAG}."):
      if arg.startswith(prefix):
        paths.append((arg[len(prefix):].split("=", 1)[0], arg))
  return paths


def unknown_override(config: Any, path: str, argument: str | None = None) -> str | None:
  """Why ``path`` (``"a.b.c"``) names no field of ``config``, or None when it does; the message
  quotes the command-line ``argument`` when given."""
  node, walked = config, FLAG
  where = f" in {argument}" if argument else ""
  for name in path.split("."):
    keys = list(node.keys()) if hasattr(node, "keys") else None
    if keys is None:
      return f"config field {walked!r} is a value, not a group: {path!r}{where} cannot be set"
    if name not in keys:
      return f"unknown config field {path!r}{where}; {walked} has: {', '.join(sorted(keys))}"
    node, walked = node[name], f"{walked}.{name}"
  return None


def check_overrides(argv: Sequence[str], default_path: str) -> list[str]:
  """Messages for the ``--config.<path>`` overrides in ``argv`` that name no field."""
  overrides = _override_paths(argv)
  if not overrides:
    return []
  config = _load(_config_path(argv, default_path))
  if config is None:
    return []
  problems = (unknown_override(config, path, arg) for path, arg in overrides)
  return [problem for problem in problems if problem]


def define_config_file(default_path: str, help_string: str = "Experiment config file.", *,
                       bad_config_status: int = USAGE_ERROR):
  """``config_flags.DEFINE_config_file(FLAG, default_path)`` after ``check_overrides`` on
  ``sys.argv``: a misspelt override exits with ``bad_config_status`` (the script's status for a
  bad config; 2 by default) and the fields that exist."""
  messages = check_overrides(sys.argv[1:], default_path)
  if messages:
    for message in messages:
      print(f"{os.path.basename(sys.argv[0])}: {message}", file=sys.stderr)
    sys.exit(bad_config_status)
  return config_flags.DEFINE_config_file(FLAG, default_path, help_string)
