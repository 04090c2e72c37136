"""Ensemble members and their evaluation: stacked + vmapped per architecture, a loop across them.

A :class:`Member` is a model (flax linen module) with its variables (``{'params': ...,
'batch_stats': ...}``) and a little metadata. Members whose module and variable shapes agree are
one *architecture group*: their variables are stacked along a new leading axis
(``jax.tree.map(jnp.stack, ...)``) and evaluated in one ``jax.vmap``-ped, jitted pass per batch.
Different architectures fall back to a Python loop over groups. Either way, the result is the
logits of every member in the members' order, shape ``(K, N, C)``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.train import members as members_lib
from research.train.evaluation import predict

Variables = Any


class Member(NamedTuple):
  """One model of an ensemble.

  Attributes:
    name: a label for tables and figures (e.g. ``seed=3``, ``epoch=12``, ``ema``).
    model: the flax linen module.
    variables: ``{'params': ..., 'batch_stats': ...}`` (``batch_stats`` may be absent or empty).
    info: metadata (source, seed, step, epoch, val_accuracy, ...).
  """
  name: str
  model: nn.Module
  variables: Variables
  info: dict = {}


def _model_key(model: nn.Module) -> str:
  return f"{type(model).__module__}.{type(model).__qualname__}:{model!r}"


def architecture_key(member: Member) -> tuple:
  """Members with equal keys can be stacked: same module (type and fields), same variable tree."""
  leaves, treedef = jax.tree.flatten(member.variables)
  return (_model_key(member.model), treedef,
          tuple((np.shape(x), jnp.result_type(x)) for x in leaves))


def group_by_architecture(members: Sequence[Member]) -> list[list[int]]:
  """Indices of the members, grouped by :func:`architecture_key`, in first-appearance order."""
  groups: dict[tuple, list[int]] = {}
  for i, member in enumerate(members):
    groups.setdefault(architecture_key(member), []).append(i)
  return list(groups.values())


def stack_variables(variables: Sequence[Variables]) -> Variables:
  """Stacks same-structured variable trees along a new leading axis (the member axis)."""
  return members_lib.stack(variables)


def unstack_variables(stacked: Variables) -> list[Variables]:
  """Inverse of :func:`stack_variables`."""
  k = jax.tree.leaves(stacked)[0].shape[0]
  return [members_lib.unstack(stacked, i) for i in range(k)]


def _apply_eval(model: nn.Module, variables: Variables, x: jax.Array) -> jax.Array:
  return model.apply(variables, x, train=False)


# Jitted functions per (module, mode), so repeated evaluations reuse the compiled programs.
_COMPILED: dict[tuple[str, str], Callable] = {}

MODES = ("vmap", "map", "loop")


def make_stacked_logits_fn(model: nn.Module, mode: str = "vmap"
                           ) -> Callable[[Variables, jax.Array], jax.Array]:
  """``f(stacked_variables, x) -> logits (K, B, C)``: one jitted program over K stacked members.

  ``mode='vmap'``: ``jax.vmap`` over the member axis (batched matmuls; best on accelerators and for
  narrow layers). ``mode='map'``: ``jax.lax.map`` over the members inside the same program (one
  ordinary matmul per member and layer; on XLA:CPU batched matmuls are slower than separate ones
  for wide layers, see scripts/bench/bench_ensemble.py).
  """
  if mode not in ("vmap", "map"):
    raise ValueError(f"mode={mode!r} is not a stacked mode; known: vmap, map.")
  key = (_model_key(model), mode)
  if key not in _COMPILED:
    if mode == "vmap":
      fn = jax.vmap(lambda v, x: _apply_eval(model, v, x), in_axes=(0, None))
    else:
      fn = lambda s, x: jax.lax.map(lambda v: _apply_eval(model, v, x), s)
    _COMPILED[key] = jax.jit(fn)
  return _COMPILED[key]


def make_single_logits_fn(model: nn.Module) -> Callable[[Variables, jax.Array], jax.Array]:
  """``f(variables, x) -> logits (B, C)``: one member, jitted."""
  key = (_model_key(model), "single")
  if key not in _COMPILED:
    _COMPILED[key] = jax.jit(lambda v, x: _apply_eval(model, v, x))
  return _COMPILED[key]


class PreparedEnsemble(NamedTuple):
  """Compiled evaluation plan: ``(logits_fn, variables, member_indices)`` per pass; the stacking
  is done once here so that repeated evaluations (and timings) pay only for the forward passes."""
  passes: list
  num_members: int
  mode: str


def prepare(members: Sequence[Member], mode: str = "vmap") -> PreparedEnsemble:
  """Groups, stacks and picks the compiled function for each pass (see :func:`member_logits`)."""
  if not members:
    raise ValueError("members is empty: an ensemble needs at least one member.")
  if mode not in MODES:
    raise ValueError(f"mode={mode!r} is unknown; known: {', '.join(MODES)}.")
  passes = []
  if mode == "loop":
    for i, member in enumerate(members):
      passes.append((make_single_logits_fn(member.model), member.variables, [i]))
  else:
    for group in group_by_architecture(members):
      stacked = stack_variables([members[i].variables for i in group])
      passes.append((make_stacked_logits_fn(members[group[0]].model, mode), stacked, group))
  return PreparedEnsemble(passes, len(members), mode)


def run_prepared(prepared: PreparedEnsemble, x: np.ndarray, batch_size: int = 512
                 ) -> np.ndarray:
  """Logits ``(K, N, C)`` of a :class:`PreparedEnsemble` on ``x``."""
  x = np.asarray(x)
  out: list[np.ndarray | None] = [None] * prepared.num_members
  stacked = prepared.mode != "loop"
  for fn, variables, indices in prepared.passes:
    logits = predict(fn, variables, x, batch_size, axis=1 if stacked else 0)
    if not stacked:
      logits = logits[None]
    for j, i in enumerate(indices):
      out[i] = logits[j]
  return np.stack(out).astype(np.float32)


def member_logits(members: Sequence[Member], x: np.ndarray, batch_size: int = 512,
                  mode: str = "vmap") -> np.ndarray:
  """Logits of every member on ``x``, shape ``(K, N, C)`` (float32), in the members' order.

  Args:
    members: the ensemble (at least one).
    x: inputs ``(N, ...)``; cast to float32.
    batch_size: examples per forward pass.
    mode: ``'vmap'``: one vmapped pass per architecture group (stacked parameters); ``'map'``:
      the stacked members one after another inside one program (``lax.map``); ``'loop'``: one
      jitted call per member (the sequential reference).
  """
  return run_prepared(prepare(members, mode), x, batch_size)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
  """``softmax(logits / T)`` over the last axis (float64 internally for a stable host-side sum)."""
  if temperature <= 0:
    raise ValueError(f"temperature={temperature!r} must be > 0.")
  z = np.asarray(logits, np.float64) / temperature
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)
