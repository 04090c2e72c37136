"""The grid of an ablation: ``--grid='<field>=<v1>,<v2>,...'`` flags, their product and its names.

A grid axis names one config field and its values; each value is parsed with the field's own type
by the parser absl/ml_collections use for ``--config.<field>=<value>`` (float, int, bool, str, a
tuple such as ``(64,64)``), so ``--grid`` accepts exactly what a ``--config.`` override accepts.
Values are separated by commas outside parentheses: ``model.hidden_sizes=(64,64),(128,)`` is two
values.

The variants are the product of the axes (first axis slowest) times the seeds. Each is named
after its overrides, in the order of the ``--grid`` flags, then the seed::

    optimizer.learning_rate=1e-3,model.init=he,seed=1

A value is written as typed (``1e-3`` stays ``1e-3``: readable and the same for the same
command), a tuple as its items joined by ``x`` (``model.hidden_sizes=64x64``); characters other
than letters, digits and ``._+-`` become ``_``. A name longer than :data:`MAX_NAME` keeps its
start and gets a hash of the whole name, so it stays unique and stable.
"""
from __future__ import annotations

import ast
import hashlib
import itertools
import re
from typing import Any, NamedTuple, Sequence

import ml_collections
from absl import flags
from ml_collections.config_flags import tuple_parser

from research.launch import unknown_override

SEED = "seed"
#: Longest directory name kept as is (file systems allow 255 bytes).
MAX_NAME = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]")
_EXAMPLE = "--grid='optimizer.learning_rate=1e-4,1e-3,1e-2'"


class Axis(NamedTuple):
  """One ``--grid`` flag: a config field and its parsed values (with their text as typed)."""
  path: str
  values: tuple
  texts: tuple[str, ...]


class Variant(NamedTuple):
  """One point of the grid: its name, its ``(path, value)`` overrides and its full config."""
  name: str
  overrides: tuple[tuple[str, Any], ...]
  config: ml_collections.ConfigDict


def split_values(text: str) -> list[str]:
  """``text`` split at the commas outside parentheses and brackets, each part stripped."""
  parts, depth, current = [], 0, []
  for char in text:
    if char in "([":
      depth += 1
    elif char in ")]":
      depth -= 1
    if char == "," and depth == 0:
      parts.append("".join(current).strip())
      current = []
    else:
      current.append(char)
  parts.append("".join(current).strip())
  return parts


def _field(config: ml_collections.ConfigDict, path: str) -> Any:
  node = config
  for name in path.split("."):
    node = node[name]
  return node


def _type_name(value: Any) -> str:
  return {bool: "True or False", int: "an integer", float: "a number",
          tuple: "a tuple such as (64,64)", str: "a string"}.get(type(value), type(value).__name__)


def parse_value(current: Any, text: str) -> Any:
  """``text`` parsed as the type of the field's ``current`` value (absl's parsers, as a
  ``--config.<field>=<text>`` override).

  Raises:
    ValueError: ``text`` is not a value of that type.
  """
  if isinstance(current, bool):
    parser = flags.BooleanParser()
  elif isinstance(current, int):
    parser = flags.IntegerParser()
  elif isinstance(current, float):
    parser = flags.FloatParser()
  elif isinstance(current, tuple):
    parser = tuple_parser.TupleParser()
  elif isinstance(current, str):
    return text
  else:  # a field without a typed default (None): a Python literal, else the text itself
    try:
      return ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return text
  try:
    return parser.parse(text)
  except (ValueError, TypeError, SyntaxError):
    raise ValueError(f"{text!r} is not {_type_name(current)}") from None


def parse_axis(config: ml_collections.ConfigDict, spec: str) -> Axis:
  """One ``--grid`` value ``'<field>=<v1>,<v2>,...'`` checked against ``config``.

  Raises:
    ValueError: no ``=``, an unknown field or a group, an empty or repeated value, or a value
      of the wrong type (one line naming the flag and what is allowed).
  """
  flag = f"--grid={spec!r}"
  if "=" not in spec:
    raise ValueError(f"{flag} must be <field>=<value>,<value>,... e.g. {_EXAMPLE}")
  path, text = (part.strip() for part in spec.split("=", 1))
  if not path:
    raise ValueError(f"{flag} names no config field; e.g. {_EXAMPLE}")
  problem = unknown_override(config, path, flag)
  if problem:
    raise ValueError(problem)
  current = _field(config, path)
  if isinstance(current, ml_collections.ConfigDict):
    raise ValueError(f"{flag}: config.{path} is a group of fields, not a value; name one of "
                     f"its fields: {', '.join(sorted(current.keys()))}")
  texts = split_values(text)
  if any(not t for t in texts):
    raise ValueError(f"{flag} has an empty value; give values separated by commas, e.g. "
                     f"{_EXAMPLE}")
  values = []
  for value_text in texts:
    try:
      value = parse_value(current, value_text)
    except ValueError as e:
      raise ValueError(f"{flag}: {e} (config.{path} is {_type_name(current)}, now "
                       f"{current!r})") from None
    for earlier, earlier_text in zip(values, texts):
      if _same(earlier, value):
        raise ValueError(f"{flag} gives the value {value!r} twice ({earlier_text!r} and "
                         f"{value_text!r})")
    values.append(value)
  return Axis(path, tuple(values), tuple(texts))


def _same(a: Any, b: Any) -> bool:
  return type(a) is type(b) and a == b


def parse_grid(config: ml_collections.ConfigDict, specs: Sequence[str], seeds: int) -> list[Axis]:
  """The axes of the ``--grid`` flags, then the seed axis (``seeds`` seeds from
  ``config.seed``) unless a ``--grid`` names ``seed`` itself.

  Raises:
    ValueError: a bad ``--grid`` (see :func:`parse_axis`), a field given twice, ``seeds < 1``,
      or ``--seeds > 1`` together with a ``seed`` grid.
  """
  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
    raise ValueError(f"--seeds={seeds!r} must be an integer >= 1 (the seeds of each variant: "
                     "config.seed, config.seed + 1, ...)")
  axes: list[Axis] = []
  for spec in specs:
    axis = parse_axis(config, spec)
    if any(a.path == axis.path for a in axes):
      raise ValueError(f"config field {axis.path!r} is in two --grid flags; give all its values "
                       "in one, e.g. " + f"--grid='{axis.path}=a,b,c'")
    axes.append(axis)
  if any(a.path == SEED for a in axes):
    if seeds > 1:
      raise ValueError(f"--seeds={seeds} and --grid='seed=...' both set the seeds; use one")
    return axes
  first = int(config.seed)
  return axes + [Axis(SEED, tuple(range(first, first + seeds)),
                      tuple(str(s) for s in range(first, first + seeds)))]


def value_text(value: Any, text: str) -> str:
  """How a value appears in a variant's name (module docstring)."""
  if isinstance(value, tuple):
    text = "x".join(str(item) for item in value)
  return _UNSAFE.sub("_", text)


def variant_name(parts: Sequence[tuple[str, Any, str]]) -> str:
  """``path=value,...`` for ``(path, value, text)`` parts, file-system safe (module docstring)."""
  name = ",".join(f"{path}={value_text(value, text)}" for path, value, text in parts)
  if len(name) > MAX_NAME:
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    name = f"{name[:MAX_NAME - 13]}-{digest}"
  return name


def expand(config: ml_collections.ConfigDict, axes: Sequence[Axis]) -> list[Variant]:
  """The product of ``axes`` (first axis slowest) as :class:`Variant` s of ``config``.

  Raises:
    ValueError: two variants would get the same directory name (values that differ only in
      characters a name cannot hold).
  """
  variants: list[Variant] = []
  seen: dict[str, tuple] = {}
  choices = [list(zip(axis.values, axis.texts)) for axis in axes]
  for combination in itertools.product(*choices):
    parts = [(axis.path, value, text) for axis, (value, text) in zip(axes, combination)]
    name = variant_name(parts)
    overrides = tuple((path, value) for path, value, _ in parts)
    if name in seen:
      raise ValueError(f"two variants get the same directory name {name!r} ({seen[name]} and "
                       f"{overrides}); write the values so they differ in letters or digits")
    seen[name] = overrides
    variant_config = config.copy_and_resolve_references()
    variant_config.update_from_flattened_dict(dict(overrides))
    variants.append(Variant(name, overrides, variant_config))
  return variants
