"""The ``--config`` flag of every entry point, with a clear error for a misspelt override.

``ml_collections.config_flags`` applies ``--config.a.b=value`` overrides while the flag is being
DEFINED (at import of the script), so an override naming no field ends in a traceback about a
``KeyError: 'b'``, and a missing config file in another traceback. ``define_config_file`` checks
the file and every ``--config.<path>`` override of the command line first, and exits with status 1
and one line naming the override and the fields that exist::

    train.py: error: unknown config field 'gradcheck.bogus' in --config.gradcheck.bogus=1;
    config.gradcheck has: burn_in_steps, check_regularization_apart, coords_per_leaf, num_examples

``--config`` takes a ``get_config()`` python file or a run's saved ``config.json`` (resume or
re-launch a run from its own config; overrides apply to it too). ``--print_config`` prints the
resolved config (after overrides) and exits.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from typing import Any, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from research.launch import distributed_flags
from research.launch.errors import fail

FLAG = "config"
PRINT_CONFIG = "print_config"
JSON_SUFFIX = ".json"

_PRINT_CONFIG = flags.DEFINE_boolean(
    PRINT_CONFIG, False, "Print the resolved config (after every --config.<field> override) and "
    "exit without running anything.")
_CONFIG_SOURCE: dict[str, str] = {}


def _config_path(argv: Sequence[str], default_path: str) -> str:
  path = default_path
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{FLAG}="):
      path = arg.split("=", 1)[1]
    elif arg == f"--{FLAG}" and i + 1 < len(argv):
      path = argv[i + 1]
  return path


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """The config of ``path``: ``get_config()`` of a python file, or a saved ``config.json``.

  Raises:
    ValueError: the file is missing, not a config, or broken (the message names it).
  """
  if not path:
    raise ValueError("--config is empty; pass a config file, e.g. --config=configs/default.py")
  if not os.path.isfile(path):
    raise ValueError(f"config file {path!r} does not exist"
                     + (" (it is a directory)" if os.path.isdir(path) else "")
                     + "; pass a configs/*.py file or a run's config.json")
  if path.endswith(JSON_SUFFIX):
    try:
      with open(path) as f:
        return ml_collections.ConfigDict(_tuples(json.load(f)))
    except (OSError, ValueError, TypeError) as e:
      raise ValueError(f"config file {path!r} is not a readable JSON config "
                       f"({type(e).__name__}: {e})") from None
  spec = importlib.util.spec_from_file_location("_config_under_check", path)
  if spec is None or spec.loader is None:
    raise ValueError(f"config file {path!r} is neither a python file nor a config.json")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    get_config = module.get_config
  except AttributeError:
    raise ValueError(f"config file {path!r} has no get_config() function") from None
  except Exception as e:  # noqa: BLE001 - any error in the user's file is reported in one line
    raise ValueError(f"config file {path!r} fails to load ({type(e).__name__}: {e})") from None
  try:
    return get_config()
  except Exception as e:  # noqa: BLE001
    raise ValueError(f"get_config() of {path!r} fails ({type(e).__name__}: {e})") from None


def _tuples(value: Any) -> Any:
  """JSON has no tuples: a saved config's lists become tuples again, as the python config had
  them (so ``--config.model.hidden_sizes='(32,)'`` overrides a saved config too)."""
  if isinstance(value, dict):
    return {key: _tuples(item) for key, item in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(item) for item in value)
  return value


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
  """Messages for the ``--config.<path>`` overrides in ``argv`` that name no field (the config
  file itself is checked by :func:`load_config_file`; an unloadable one gives no message here)."""
  overrides = _override_paths(argv)
  if not overrides:
    return []
  try:
    config = load_config_file(_config_path(argv, default_path))
  except ValueError:
    return []
  problems = (unknown_override(config, path, arg) for path, arg in overrides)
  return [problem for problem in problems if problem]


def define_config_file(default_path: str, help_string: str = "Experiment config file."):
  """The ``--config`` flag (a python config file or a saved ``config.json``), checked first.

  A missing or broken file and a misspelt ``--config.<path>`` override exit with status 1 and one
  line (see :func:`research.launch.fail`) before absl parses anything.
  """
  argv = sys.argv[1:]
  path = _config_path(argv, default_path)
  try:
    config = load_config_file(path)
  except ValueError as e:
    fail(str(e))
  messages = check_overrides(argv, default_path)
  if messages:
    fail(messages[0])
  _CONFIG_SOURCE["path"] = os.path.abspath(path)
  help_string = (f"{help_string} A get_config() python file or a run's saved config.json. "
                 f"Override any field with --{FLAG}.<field>=<value>; --{PRINT_CONFIG} lists "
                 "every field with its value.")
  if path.endswith(JSON_SUFFIX):
    # ml_collections reads only python files: the JSON config becomes a config-dict flag, and the
    # --config=<file> argument (which that flag does not take) is removed from the command line.
    sys.argv[1:] = _without_config_argument(argv)
    holder = config_flags.DEFINE_config_dict(FLAG, config, help_string)
  else:
    holder = config_flags.DEFINE_config_file(FLAG, default_path, help_string)
  show_in_help(FLAG, PRINT_CONFIG, "verbosity", *distributed_flags.NAMES)
  return holder


def show_in_help(*names: str) -> None:
  """Lists flags defined outside the script (``--config``, ``--print_config``, absl's
  ``--verbosity``) in the script's own ``--help``."""
  main_module = sys.argv[0] if sys.argv else "__main__"
  for name in names:
    if name in flags.FLAGS:
      flags.FLAGS.register_key_flag_for_module(main_module, flags.FLAGS[name])


def _without_config_argument(argv: Sequence[str]) -> list[str]:
  out, skip = [], False
  for i, arg in enumerate(argv):
    if skip:
      skip = False
      continue
    if arg.startswith(f"--{FLAG}="):
      continue
    if arg == f"--{FLAG}" and i + 1 < len(argv):
      skip = True
      continue
    out.append(arg)
  return out


def config_source() -> str | None:
  """The absolute path of the config file named on the command line (None before
  :func:`define_config_file`)."""
  return _CONFIG_SOURCE.get("path")


def config_name() -> str:
  """A short name for the config (file name without extension; a saved run's folder name)."""
  path = config_source() or "config"
  stem = os.path.splitext(os.path.basename(path))[0]
  return os.path.basename(os.path.dirname(path)) if stem == "config" else stem


def print_config_requested() -> bool:
  return bool(_PRINT_CONFIG.value)


def default_config(file_name: str) -> str:
  """The path of ``configs/<file_name>`` (the installed ``configs`` package of this checkout)."""
  import configs
  return os.path.join(os.path.dirname(os.path.abspath(configs.__file__)), file_name)
