"""Fused single-pass update kernels for XLA:CPU (C++ through ``jax.ffi``), and when they run.

XLA:CPU emits one loop per output buffer, so the pure-JAX Adam reads ``g`` and ``m`` in the loop
that writes ``m``, ``g`` and ``v`` in the one that writes ``v``, and ``p``, ``m``, ``v`` in the one
that writes ``p``: 10 words moved per parameter where 7 suffice. ``kernels.cc`` (compiled into
``libtrainlab_fused.so`` by ``pip install -e .``) runs a rule in ONE pass over all leaves: it reads
``p``, ``g`` and the state once and writes ``p + delta`` and the state once, in place (the outputs
alias the inputs: with ``params`` and ``opt_state`` donated to the jitted step nothing is copied or
allocated), its chunks shared over XLA's intra-op thread pool.

Writing ``p + delta`` is outside the ``optax.GradientTransformation`` contract (``update`` returns
the delta that ``optax.apply_updates`` adds in a second pass), so the kernels run in

    params, opt_state = research.optim.fused.update_and_apply(tx, grads, opt_state, params)

which equals ``tx.update`` followed by ``optax.apply_updates`` to the bit, for any ``tx``: when
the LAST transformation in ``tx`` is a ``research.optim`` rule (alone, in ``optax.chain``, under
``optax.inject_hyperparams``: every ``get_optimizer`` result) the rule writes ``p + delta`` in its
kernel; otherwise this is ``tx.update`` then ``optax.apply_updates``. ``tx.update`` itself keeps
the pure-JAX formulas: a kernel computing deltas (``TRAINLAB_FUSED=delta``, for measurement) must
write the delta to a new buffer that ``apply_updates`` reads again, and measures slower than XLA's
own loops (``scripts/bench/bench_optim.py``).

The kernels compute the pure-JAX rule's numbers to the bit: the same operations in the same order
and precision, including the multiply-adds that XLA:CPU contracts into FMAs (see kernels.cc), for
float32 and float64 leaves. Leaves of other dtypes (bfloat16, float16), whose gradient or state
has another dtype, or whose hyperparameters are wider (float32 leaves with float64 schedule values,
as under x64) run the pure-JAX formula, leaf by leaf. Hyperparameters stay traced values read
from the optimizer state (0-d buffers of the kernel call: schedules and ``set_hyperparams`` do not
recompile); under ``jax.vmap`` (populations) the call receives one value per member
(``vmap_method="broadcast_all"``).

``TRAINLAB_FUSED`` (environment, read when a step is traced): ``1`` or unset, the kernels when
available (the library is built and loads, the default backend is CPU); ``0``, pure JAX
everywhere; ``delta``, the kernels in ``tx.update`` too. ``status()`` says which path runs and why.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pathlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

LIBRARY_NAME = "libtrainlab_fused.so"
#: The environment variable choosing the path (see the module doc).
SWITCH = "TRAINLAB_FUSED"
#: The extra ``update`` argument with which ``update_and_apply`` asks a rule for ``p + delta``.
APPLY_ARG = "fused_apply"

_TARGET = "trainlab_fused_update"
_ABI_VERSION = 2
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_MODES = {"1": "apply", "": "apply", "0": "off", "delta": "delta"}


class _Rule(NamedTuple):
  num_scalars: int
  num_states: int
  delta_is_state: bool  # momentum: the delta IS the new velocity (written once)
  delta_kernel: bool    # whether TRAINLAB_FUSED=delta runs the kernel in tx.update
  apply_kernel: bool = True  # whether update_and_apply runs the kernel (TRAINLAB_FUSED=1)


#: kernel name -> layout (the scalars in the order kernels.cc reads them; see each ``*_rule``)
RULES: dict[str, _Rule] = {
    # sgd stays pure JAX: its delta fuses into apply_updates' loop (3 words per parameter, the
    # minimum) and that XLA loop measured FASTER than the kernel (bench_optim, medians of 3 runs:
    # 12.2 vs 16.0 ms on 16.5M values, 35.6 vs 41.8 ms on 66M); a separate delta
    # (TRAINLAB_FUSED=delta) cannot match XLA's contracted FMA either. The kernel stays for tests.
    "sgd": _Rule(1, 0, False, False, apply_kernel=False),  # -lr
    "momentum": _Rule(2, 1, True, True),     # mu, lr
    "nesterov": _Rule(2, 1, False, True),    # mu, lr
    "adagrad": _Rule(2, 1, False, True),     # -lr, eps
    "rmsprop": _Rule(4, 1, False, True),     # decay, 1 - decay, -lr, eps
    "adam": _Rule(6, 2, False, True),        # b1, 1 - b1, b2, 1 - b2, -step_size, eps_hat
}


# ----------------------------------------------------------------------------- which path runs


def library_path() -> pathlib.Path:
  """Where ``pip install -e .`` puts the compiled kernels (next to this file)."""
  return pathlib.Path(__file__).with_name(LIBRARY_NAME)


@functools.cache
def _load() -> str | None:
  """Loads the library and registers its FFI target; None on success, else why not."""
  path = library_path()
  if not path.exists():
    return f"{LIBRARY_NAME} not built: reinstall with a C++ compiler, pip install -e ."
  try:
    library = ctypes.CDLL(str(path))
    version = library.TrainlabFusedAbiVersion
    version.restype = ctypes.c_int64
    if version() != _ABI_VERSION:
      return (f"{LIBRARY_NAME} is from another version (ABI {version()}, expected "
              f"{_ABI_VERSION}): reinstall, pip install -e .")
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(library.TrainlabFusedUpdate),
                                platform="cpu")
  except (OSError, AttributeError) as error:
    return f"cannot load {LIBRARY_NAME}: {error}"
  return None


def mode() -> str:
  """``"apply"`` (kernels in ``update_and_apply``), ``"delta"`` (also in ``tx.update``) or
  ``"off"``, from ``TRAINLAB_FUSED``.

  Raises:
    ValueError: ``TRAINLAB_FUSED`` is none of 1, 0, delta.
  """
  value = os.environ.get(SWITCH, "1").strip().lower()
  if value not in _MODES:
    raise ValueError(f"{SWITCH}={os.environ[SWITCH]!r}: expected 1 (fused kernels when "
                     "available), 0 (pure JAX) or delta (kernels in tx.update too)")
  return _MODES[value]


def _unavailable_reason() -> str | None:
  if mode() == "off":
    return f"{SWITCH}=0"
  backend = jax.default_backend()
  if backend != "cpu":
    return f"the fused kernels are CPU-only; the backend is {backend}"
  return _load()


def available() -> bool:
  """True when ``update_and_apply`` runs the fused kernels (see ``status``)."""
  return _unavailable_reason() is None


#: ``config.optimizer.name`` -> the kernel its update runs in (sgd's stays pure JAX, see RULES)
OPTIMIZER_KERNELS = {"momentum": "momentum", "nesterov": "nesterov",
                     "nesterov_lookahead": "momentum", "adagrad": "adagrad",
                     "rmsprop": "rmsprop", "adam": "adam"}


@contextlib.contextmanager
def forced_mode(value: str) -> Iterator[None]:
  """``TRAINLAB_FUSED=value`` inside the block (the rules read it when a step is traced: trace
  and compile the step inside), the previous setting restored after it."""
  saved = os.environ.get(SWITCH)
  os.environ[SWITCH] = value
  try:
    yield
  finally:
    if saved is None:
      del os.environ[SWITCH]
    else:
      os.environ[SWITCH] = saved


def status(optimizer: str | None = None) -> str:
  """Which path the update rules take (of ``optimizer``, a ``config.optimizer.name``, when given),
  for the run's start-up line and summary: ``"fused CPU kernels (libtrainlab_fused.so)"`` or
  ``"pure JAX (<why>)"``.

  Raises:
    ValueError: ``TRAINLAB_FUSED`` is none of 1, 0, delta.
  """
  reason = _unavailable_reason()
  if reason is None and optimizer is not None and optimizer not in OPTIMIZER_KERNELS:
    reason = (f"{optimizer}: XLA's single loop measured faster than a kernel" if optimizer == "sgd"
              else f"{optimizer} has no fused kernel")
  if reason is not None:
    return f"pure JAX ({reason})"
  also = "; in tx.update too, TRAINLAB_FUSED=delta" if mode() == "delta" else ""
  return f"fused CPU kernels ({LIBRARY_NAME}{also})"


# ----------------------------------------------------------------------------- the update


class AppliedParams:
  """What a rule returns instead of its deltas when ``update_and_apply`` asked for ``p + delta``.

  Deliberately neither a pytree nor an array: a transformation chained AFTER the rule (which would
  receive new parameters where it expects deltas) fails loudly instead of computing nonsense.
  """
  __slots__ = ("params",)

  def __init__(self, params: Any):
    self.params = params

  def _refuse(self, *args, **kwargs):
    raise TypeError(
        "a research.optim rule applied its update in place (research.optim.fused."
        "update_and_apply) but another transformation follows it in the chain; put the rule "
        "last, or call tx.update and optax.apply_updates")

  __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __neg__ = _refuse
  __array__ = __jax_array__ = _refuse


def update_and_apply(tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any,
                     **extra_args: Any) -> tuple[Any, Any]:
  """``(optax.apply_updates(params, delta), new_opt_state)`` where ``delta, new_opt_state =
  tx.update(grads, opt_state, params, **extra_args)``, to the bit.

  When the last rule in ``tx`` is a ``research.optim`` rule and the kernels are available, that
  rule writes ``params + delta`` in the pass that updates its state; donate ``params`` and
  ``opt_state`` to the jitted step so that this happens in place.
  """
  if not getattr(tx.update, "fused_apply", False):   # not a research.optim rule: as optax does
    updates, opt_state = tx.update(grads, opt_state, params, **extra_args)
    return optax.apply_updates(params, updates), opt_state
  out, opt_state = optax.with_extra_args_support(tx).update(grads, opt_state, params,
                                                              **extra_args, **{APPLY_ARG: True})
  if isinstance(out, AppliedParams):
    return out.params, opt_state
  return optax.apply_updates(params, out), opt_state


def _xla_contracts() -> bool:
  """Whether XLA:CPU may contract a multiply and an add into one FMA: yes unless ``XLA_FLAGS``
  limits it to an instruction set without FMA (the kernels then round both operations too)."""
  limit = re.search(r"--xla_cpu_max_isa=(\w+)", os.environ.get("XLA_FLAGS", ""))
  return not (limit and limit.group(1).upper() in ("SSE4_2", "AVX"))


def _runs_in_kernel(buffers: Sequence[Any], scalars: Sequence[Any]) -> bool:
  """True when the kernel reproduces the formula on this leaf: its buffers share a float32 or
  float64 dtype and a shape, and every scalar meets them in that dtype (as the formula computes)."""
  dtype = jnp.result_type(buffers[0])
  if np.dtype(dtype) not in _KERNEL_DTYPES or jnp.size(buffers[0]) == 0:
    return False
  if any(jnp.result_type(b) != dtype or jnp.shape(b) != jnp.shape(buffers[0])
         for b in buffers[1:]):
    return False
  return all(jnp.ndim(s) == 0 and jnp.result_type(s, dtype) == dtype for s in scalars)


def _kernel_call(name: str, scalars: Sequence[Any], leaf_buffers: list[list[Any]], apply: bool
                 ) -> list[list[jax.Array]]:
  """One FFI call over leaves of one dtype, each given as [p (apply), g, state...]; returns per
  leaf [p + delta or delta (absent when the delta is the state), new state...]."""
  rule = RULES[name]
  dtype = jnp.result_type(leaf_buffers[0][0])
  args = [jnp.asarray(s, dtype) for s in scalars]
  num_out = rule.num_states + (1 if apply or not rule.delta_is_state else 0)
  results, aliases = [], {}
  for buffers in leaf_buffers:
    first_in, first_out = len(args), len(results)
    if apply:
      aliases[first_in] = first_out  # p -> p + delta
    for k in range(rule.num_states):  # state -> new state
      aliases[first_in + len(buffers) - rule.num_states + k] = (
          first_out + num_out - rule.num_states + k)
    args.extend(buffers)
    results.extend([jax.ShapeDtypeStruct(jnp.shape(buffers[0]), dtype)] * num_out)
  outs = jax.ffi.ffi_call(_TARGET, results, vmap_method="broadcast_all",
                          input_output_aliases=aliases)(
                              *args, rule=name, apply=int(apply), contract=int(_xla_contracts()))
  return [list(outs[i:i + num_out]) for i in range(0, len(outs), num_out)]


def update(name: str, formula: Callable[..., tuple], scalars: Sequence[Any], grads: Any,
           states: Sequence[Any], params: Any = None, apply: bool = False
           ) -> tuple[Any, tuple[Any, ...]]:
  """One update of rule ``name`` over a pytree: the fused kernel where it applies (see the module
  doc), ``formula`` (the pure-JAX rule of one leaf) everywhere else.

  Args:
    name: a key of ``RULES``.
    formula: ``formula(g, *state_leaves) -> (delta, *new_state_leaves)`` for one leaf.
    scalars: the scalars ``formula`` uses, computed as it computes them, in the kernel's order
      (``RULES``).
    grads: the gradient pytree.
    states: the rule's state trees (``RULES[name].num_states`` of them), structured like ``grads``.
    params: the parameters (needed when ``apply``).
    apply: return ``AppliedParams(params + delta)`` instead of the deltas (``update_and_apply``).

  Returns:
    ``(deltas or AppliedParams, tuple of new state trees)``.
  """
  rule = RULES[name]
  if apply and params is None:
    raise ValueError(f"{APPLY_ARG}=True needs params: call tx.update(grads, state, params, ...)")
  g_leaves, treedef = jax.tree.flatten(grads)
  state_leaves = [treedef.flatten_up_to(tree) for tree in states]
  p_leaves = treedef.flatten_up_to(params) if apply else [None] * len(g_leaves)
  out_leaves = [None] * len(g_leaves)
  new_state_leaves = [[None] * len(g_leaves) for _ in states]

  use_kernel = ((apply and rule.apply_kernel) or (rule.delta_kernel and mode() == "delta")
                ) and available()
  groups: dict[np.dtype, list[int]] = {}  # kernel leaves by dtype: one call per dtype
  for i, g in enumerate(g_leaves):
    buffers = ([p_leaves[i]] if apply else []) + [g] + [s[i] for s in state_leaves]
    if use_kernel and _runs_in_kernel(buffers, scalars):
      groups.setdefault(np.dtype(jnp.result_type(g)), []).append(i)
      continue
    delta, *new_state = formula(g, *(s[i] for s in state_leaves))
    for k, leaf in enumerate(new_state):
      new_state_leaves[k][i] = leaf
    # as optax.apply_updates
    out_leaves[i] = (jnp.asarray(p_leaves[i] + delta).astype(jnp.result_type(p_leaves[i]))
                     if apply else delta)

  for indices in groups.values():
    leaf_buffers = [([p_leaves[i]] if apply else []) + [g_leaves[i]] +
                    [s[i] for s in state_leaves] for i in indices]
    for i, outs in zip(indices, _kernel_call(name, scalars, leaf_buffers, apply)):
      for k in range(rule.num_states):
        new_state_leaves[k][i] = outs[len(outs) - rule.num_states + k]
      out_leaves[i] = outs[0]  # p + delta, the delta, or (momentum) the new velocity

  out = treedef.unflatten(out_leaves)
  new_states = tuple(treedef.unflatten(leaves) for leaves in new_state_leaves)
  return (AppliedParams(out) if apply else out), new_states
