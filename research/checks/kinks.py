"""Kink detection: which discrete "decisions" a JAX computation takes, read from its jaxpr.

A centered difference ``(f(x+h) - f(x-h)) / 2h`` is only meaningful when ``f`` is smooth on
``[x-h, x+h]``. Piecewise functions (ReLU, hinge, max-pooling, ``jnp.where``, ``abs``, sorting,
clipping, rounding) are smooth except where one of their internal decisions flips: which operand
of a ``max`` is larger, which branch a ``select_n`` takes, which index ``argmax`` returns.
CS231n's gradient-check notes call such a flip "crossing a kink" and suggest tracking the winners
of every max; this module does that for *arbitrary* code by interpreting the function's jaxpr.

``DecisionProgram(closed_jaxpr, tainted)`` is a re-implementation of ``jax.core.eval_jaxpr`` that,
next to the outputs, returns the value of every decision whose inputs depend on the parameters
(the "tainted" inputs). Evaluating it at ``x``, ``x+h`` and ``x-h`` (batched with ``jax.vmap``)
and comparing the decisions tells, per perturbation, whether a kink was crossed and at which
primitive (``DecisionSite``: primitive, source line, nesting scope).

Nested computations are followed: ``jit``/``pjit``, ``closed_call``, ``custom_jvp_call``,
``custom_vjp_call`` (their primal computation, which is what the numerical derivative sees),
``remat``/``checkpoint``, ``scan`` (decisions of every iteration are stacked), ``cond`` (the
branch index is itself a decision and the taken branch's decisions are compared). ``while``
records its trip count as a decision but not the decisions inside its body, and any other
higher-order primitive is evaluated as is: both are listed in ``not_inspected``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

try:  # Private, only used to name the source line of a decision in reports.
  from jax._src import source_info_util as _source_info_util
except ImportError:  # pragma: no cover - depends on the jax version
  _source_info_util = None


class DecisionSite(NamedTuple):
  """One place in the computation whose output depends discretely on its inputs."""
  primitive: str   # e.g. "max", "select_n", "argmax", "cond"
  decision: str    # what is compared, e.g. "which operand is larger"
  source: str      # user source line, e.g. "model.py:42 (__call__)"
  scope: str       # nesting, e.g. "jit(mlp) > custom_jvp_call"

  def __str__(self) -> str:
    where = f" in {self.scope}" if self.scope else ""
    return f"{self.primitive} at {self.source}{where}"


# --- Decision rules: (input values, output values, params) -> array that identifies the piece. --


def _sign_of_difference(a, b):
  return (a > b).astype(jnp.int8) - (a < b).astype(jnp.int8)


def _larger_operand(invals, outs, params):
  del outs, params
  return _sign_of_difference(invals[0], invals[1])


def _sign_of_input(invals, outs, params):
  del outs, params
  return _sign_of_difference(invals[0], jnp.zeros((), invals[0].dtype))


def _output(invals, outs, params):
  del invals, params
  return outs[0]


def _predicate(invals, outs, params):
  del outs, params
  return invals[0]


def _extreme_mask(invals, outs, params):
  # Which elements attain the reduced max/min (ties included): what the JVP rule uses.
  return invals[0] == lax.expand_dims(outs[0], params["axes"])


def _running_extreme_mask(invals, outs, params):
  del params
  return invals[0] == outs[0]


def _permutation(invals, outs, params):
  del outs
  num_keys = params["num_keys"]
  dimension = params["dimension"]
  keys = tuple(invals[:num_keys])
  iota = lax.broadcasted_iota(jnp.int32, keys[0].shape, dimension)
  return lax.sort(keys + (iota,), dimension=dimension, is_stable=True, num_keys=num_keys)[-1]


def _clamp_side(invals, outs, params):
  del outs, params
  low, x, high = invals
  return (x < low).astype(jnp.int8) - (x > high).astype(jnp.int8)


def _quotient(invals, outs, params):
  del params
  x, y = invals
  y = jnp.where(y == 0, jnp.ones_like(y), y)
  return jnp.round((x - outs[0]) / y)


def _top_k_indices(invals, outs, params):
  del invals, params
  return outs[1]


def _window_argmax(select_max: bool):
  """Index of the winning element of every pooling window (max/min pooling)."""

  def rule(invals, outs, params):
    del outs
    x = invals[0]
    flat = jnp.arange(x.size, dtype=jnp.int32).reshape(x.shape)
    fill = -jnp.inf if select_max else jnp.inf

    def pick(a, b):
      a_value, a_index = a
      b_value, b_index = b
      better = (a_value > b_value) if select_max else (a_value < b_value)
      keep_a = better | ((a_value == b_value) & (a_index < b_index))
      return (jnp.where(keep_a, a_value, b_value), jnp.where(keep_a, a_index, b_index))

    _, winner = lax.reduce_window(
        (x, flat), (jnp.array(fill, x.dtype), jnp.array(np.iinfo(np.int32).max, jnp.int32)),
        pick, params["window_dimensions"], params["window_strides"], params["padding"],
        params["base_dilation"], params["window_dilation"])
    return winner

  return rule


def _float_to_discrete(invals, outs, params):
  del invals, params
  return outs[0]


_COMPARE = "which side of the comparison holds"
DECISION_RULES: dict[str, tuple[str, Callable]] = {
    "max": ("which operand is larger", _larger_operand),
    "min": ("which operand is smaller", _larger_operand),
    "abs": ("sign of the input", _sign_of_input),
    "sign": ("sign of the input", _sign_of_input),
    "gt": (_COMPARE, _output),
    "ge": (_COMPARE, _output),
    "lt": (_COMPARE, _output),
    "le": (_COMPARE, _output),
    "eq": (_COMPARE, _output),
    "ne": (_COMPARE, _output),
    "is_finite": ("finiteness", _output),
    "select_n": ("which case is selected", _predicate),
    "argmax": ("index of the maximum", _output),
    "argmin": ("index of the minimum", _output),
    "reduce_max": ("which elements attain the maximum", _extreme_mask),
    "reduce_min": ("which elements attain the minimum", _extreme_mask),
    "cummax": ("where the running maximum is attained", _running_extreme_mask),
    "cummin": ("where the running minimum is attained", _running_extreme_mask),
    "sort": ("the sorting permutation", _permutation),
    "top_k": ("the top-k indices", _top_k_indices),
    "clamp": ("below, inside or above the range", _clamp_side),
    "floor": ("the integer part", _output),
    "ceil": ("the integer part", _output),
    "round": ("the integer part", _output),
    "rem": ("the integer quotient", _quotient),
    "reduce_window_max": ("which element wins each window", _window_argmax(True)),
    "reduce_window_min": ("which element wins each window", _window_argmax(False)),
}

# Higher-order primitives whose single sub-computation is evaluated inline, with the name of
# the parameter holding it.
_CALL_PRIMITIVES = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat2": "jaxpr",
    "remat": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}

_LOW_PRECISION_FLOATS = (jnp.float16, jnp.bfloat16, jnp.float32)


def _is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _describe_source(eqn, fallback: str = "unknown source") -> str:
  """The user's source line of an equation (library-internal ones fall back to the caller's)."""
  if _source_info_util is None:
    return fallback
  try:
    summary = _source_info_util.summarize(eqn.source_info)
  except Exception:  # noqa: BLE001  # pragma: no cover - a changed private API may raise anything
    return fallback
  return summary or fallback


def _unwrap(jaxpr_like) -> tuple[Any, Sequence[Any]]:
  if isinstance(jaxpr_like, jcore.ClosedJaxpr):
    return jaxpr_like.jaxpr, jaxpr_like.consts
  return jaxpr_like, ()


def _contains_decisions(jaxpr) -> bool:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in DECISION_RULES or eqn.primitive.name in ("cond", "while"):
      return True
    if any(_contains_decisions(sub) for sub in jcore.jaxprs_in_params(eqn.params)):
      return True
  return False


def _live_equations(jaxpr) -> list:
  """Dead-code elimination: only equations that feed an output (or have effects) can matter."""
  live = {v for v in jaxpr.outvars if isinstance(v, jcore.Var)}
  kept = []
  for eqn in reversed(jaxpr.eqns):
    if eqn.effects or any(v in live for v in eqn.outvars if isinstance(v, jcore.Var)):
      kept.append(eqn)
      live.update(v for v in eqn.invars if isinstance(v, jcore.Var))
  return kept[::-1]


@dataclasses.dataclass
class _Recorder:
  """Collects, while a jaxpr is interpreted (at trace time), the decisions and the notes."""
  record: bool = True
  sites: list = dataclasses.field(default_factory=list)
  values: list = dataclasses.field(default_factory=list)
  not_inspected: list = dataclasses.field(default_factory=list)
  precision_casts: list = dataclasses.field(default_factory=list)
  stop_gradients: list = dataclasses.field(default_factory=list)

  def add(self, site: DecisionSite, value) -> None:
    if self.record:
      self.sites.append(site)
      self.values.append(value)

  def note(self, kind: str, text: str) -> None:
    target = getattr(self, kind)
    if text not in target:
      target.append(text)

  def absorb_notes(self, other: "_Recorder") -> None:
    for kind in ("not_inspected", "precision_casts", "stop_gradients"):
      for text in getattr(other, kind):
        self.note(kind, text)


def _join(scope: str, name: str) -> str:
  return f"{scope} > {name}" if scope else name


# Primitives whose output is > 0 (always), and those whose output is > 0 when every input is.
_POSITIVE_OUTPUT = {"exp", "exp2", "logistic"}
_POSITIVE_PRESERVING = {"add", "mul", "div", "max", "min", "reduce_sum", "reduce_max", "reduce_min",
                        "broadcast_in_dim", "reshape", "squeeze", "expand_dims", "copy",
                        "convert_element_type", "transpose", "concatenate", "sqrt", "rsqrt",
                        "reduce_prod", "cumsum", "slice", "dynamic_slice", "pad"}


def _positive_vars(jaxpr) -> set:
  """Variables that are certainly > 0 (e.g. the sum of exps inside ``logsumexp``).

  ``abs``/``sign`` of such a value takes no decision (its sign cannot flip), so it is no kink.
  """
  positive = set()
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    inputs = [v for v in eqn.invars if isinstance(v, jcore.Var)]
    literals_positive = all(np.all(np.asarray(v.val) > 0) for v in eqn.invars
                            if isinstance(v, jcore.Literal))
    if name in _POSITIVE_OUTPUT or (name in _POSITIVE_PRESERVING and inputs and literals_positive
                                    and all(v in positive for v in inputs)):
      positive.update(v for v in eqn.outvars if isinstance(v, jcore.Var))
  return positive


def _differentiable_vars(jaxpr, relevant_outs: Sequence[bool] | None) -> set:
  """Variables whose value reaches a (relevant) output other than through ``stop_gradient``.

  A decision whose outputs only feed ``stop_gradient`` is not a kink: the author declared the
  path irrelevant to the derivative (e.g. the max shift inside ``logsumexp``/``softmax``, whose
  winner may change while the function stays smooth).
  """
  if relevant_outs is None:
    relevant_outs = [True] * len(jaxpr.outvars)
  relevant = {v for v, r in zip(jaxpr.outvars, relevant_outs) if r and isinstance(v, jcore.Var)}
  for eqn in reversed(jaxpr.eqns):
    if eqn.primitive.name == "stop_gradient":
      continue
    if eqn.effects or any(v in relevant for v in eqn.outvars if isinstance(v, jcore.Var)):
      relevant.update(v for v in eqn.invars if isinstance(v, jcore.Var))
  return relevant


def _interpret(jaxpr, consts, args, tainted, recorder: _Recorder, scope: str, top: bool = False,
               source: str = "unknown source", relevant_outs: Sequence[bool] | None = None):
  """Evaluates ``jaxpr`` like ``jax.core.eval_jaxpr`` and records the tainted decisions.

  Returns ``(outputs, output_taint)``. ``tainted[i]`` says whether argument i depends on the
  parameters; only decisions with a tainted input are recorded (the others cannot change
  under a parameter perturbation). ``source`` names the caller, for equations without a user
  source line of their own (e.g. inside ``jnp.clip``).
  """
  env: dict = {}
  taint: dict = {}

  def read(v):
    return v.val if isinstance(v, jcore.Literal) else env[v]

  def read_taint(v):
    return False if isinstance(v, jcore.Literal) else taint.get(v, False)

  for v, value in zip(jaxpr.constvars, consts):
    env[v] = value
  for v, value, t in zip(jaxpr.invars, args, tainted):
    env[v] = value
    taint[v] = t

  equations = _live_equations(jaxpr) if top else jaxpr.eqns
  relevant = _differentiable_vars(jaxpr, relevant_outs)
  positive = _positive_vars(jaxpr)
  for eqn in equations:
    invals = [read(v) for v in eqn.invars]
    in_taint = [read_taint(v) for v in eqn.invars]
    eqn_relevant = [isinstance(v, jcore.Var) and v in relevant for v in eqn.outvars]
    any_taint = any(in_taint)
    # A decision is recorded only on a differentiable path to the output.
    record = any_taint and (any(eqn_relevant) or bool(eqn.effects))
    name = eqn.primitive.name
    if name in ("abs", "sign") and isinstance(eqn.invars[0], jcore.Var):
      record = record and eqn.invars[0] not in positive
    if name in _CALL_PRIMITIVES and _CALL_PRIMITIVES[name] in eqn.params:
      sub, sub_consts = _unwrap(eqn.params[_CALL_PRIMITIVES[name]])
      label = name
      if name in ("jit", "pjit") and eqn.params.get("name"):
        label = f"{name}({eqn.params['name']})"
      outs, out_taint = _interpret(sub, sub_consts, invals, in_taint, recorder,
                                   _join(scope, label), source=_describe_source(eqn, source),
                                   relevant_outs=eqn_relevant)
    elif name == "cond":
      outs, out_taint = _interpret_cond(eqn, invals, in_taint, recorder, scope, source)
    elif name == "scan":
      outs, out_taint = _interpret_scan(eqn, invals, in_taint, recorder, scope, source)
    elif name == "while":
      outs, out_taint = _interpret_while(eqn, invals, in_taint, recorder, scope, source)
    else:
      outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
      if not eqn.primitive.multiple_results:
        outs = [outs]
      out_taint = [any_taint] * len(outs)
      if record:
        _record_first_order(eqn, invals, in_taint, outs, recorder, scope, source)
        if any(_contains_decisions(sub) for sub in jcore.jaxprs_in_params(eqn.params)):
          recorder.note("not_inspected", f"{name} at {_describe_source(eqn, source)}: "
                        "decisions inside it are not followed")
    for v, value, t in zip(eqn.outvars, outs, out_taint):
      if isinstance(v, jcore.Var):
        env[v] = value
        taint[v] = t
  return [read(v) for v in jaxpr.outvars], [read_taint(v) for v in jaxpr.outvars]


def _record_first_order(eqn, invals, in_taint, outs, recorder: _Recorder, scope: str,
                        source: str) -> None:
  name = eqn.primitive.name
  where = _describe_source(eqn, source)
  if name == "convert_element_type":
    new_dtype = eqn.params["new_dtype"]
    if _is_float(invals[0]):
      if not jnp.issubdtype(new_dtype, jnp.inexact):
        recorder.add(DecisionSite(name, f"conversion to {np.dtype(new_dtype).name}",
                                  where, scope), outs[0])
      elif (jnp.issubdtype(new_dtype, jnp.floating)
            and jnp.finfo(new_dtype).bits < jnp.finfo(jnp.result_type(invals[0])).bits):
        recorder.note("precision_casts",
                      f"cast {jnp.result_type(invals[0]).name} -> {np.dtype(new_dtype).name} "
                      f"at {where}")
    return
  if name == "stop_gradient":
    recorder.note("stop_gradients", f"stop_gradient at {where}")
    return
  if name not in DECISION_RULES:
    return
  if name == "select_n" and not in_taint[0]:
    return  # The predicate does not depend on the parameters: the selection cannot flip.
  if name in ("abs", "sign") and not _is_float(invals[0]):
    return
  description, rule = DECISION_RULES[name]
  try:
    value = rule(invals, outs, eqn.params)
  except Exception as error:  # noqa: BLE001 - a rule's unusual parameters: say so, don't guess.
    recorder.note("not_inspected",
                  f"{name} at {where}: decision not computable ({error})")
    return
  recorder.add(DecisionSite(name, description, where, scope), value)


def _interpret_scan(eqn, invals, in_taint, recorder: _Recorder, scope: str,
                    source: str):
  params = eqn.params
  num_consts, num_carry = params["num_consts"], params["num_carry"]
  body, body_consts = _unwrap(params["jaxpr"])
  consts = invals[:num_consts]
  init = invals[num_consts:num_consts + num_carry]
  xs = invals[num_consts + num_carry:]
  # Conservative taint of the carry: if anything entering the loop is tainted, every carry may be.
  any_taint = any(in_taint)
  body_taint = (list(in_taint[:num_consts]) + [any_taint] * num_carry
                + list(in_taint[num_consts + num_carry:]))
  source = _describe_source(eqn, source)
  inner_scope = _join(scope, f"scan at {source}")
  traced: list[_Recorder] = []

  def step(carry, x):
    inner = _Recorder(record=recorder.record)
    traced.append(inner)
    outs, _ = _interpret(body, body_consts, [*consts, *carry, *x], body_taint, inner, inner_scope,
                         source=source)
    return list(outs[:num_carry]), (list(outs[num_carry:]), list(inner.values))

  carry, (ys, stacked) = lax.scan(step, list(init), list(xs), length=params["length"],
                                  reverse=params["reverse"], unroll=params["unroll"])
  inner = traced[-1]
  for site, value in zip(inner.sites, stacked):
    recorder.add(site._replace(decision=site.decision + " (every iteration)"), value)
  recorder.absorb_notes(inner)
  outs = list(carry) + list(ys)
  return outs, [any_taint] * len(outs)


def _interpret_cond(eqn, invals, in_taint, recorder: _Recorder, scope: str,
                    source: str):
  index, operands = invals[0], invals[1:]
  operand_taint = in_taint[1:]
  branches = eqn.params["branches"]
  source = _describe_source(eqn, source)
  if in_taint[0]:
    recorder.add(DecisionSite("cond", "which branch is taken", source, scope), index)

  def make_branch(i):
    jaxpr, consts = _unwrap(branches[i])
    inner_scope = _join(scope, f"cond branch {i} at {source}")

    def branch(*ops):
      inner = _Recorder(record=recorder.record)
      outs, out_taint = _interpret(jaxpr, consts, ops, operand_taint, inner, inner_scope,
                                   source=source)
      return outs, inner, out_taint

    return branch

  branch_fns = [make_branch(i) for i in range(len(branches))]
  # Every branch returns the decisions of all branches (zeros in the slots of the others) so
  # that the outputs of `switch` have one structure.
  slots = []
  out_taint = [in_taint[0]] * len(eqn.outvars)
  for fn in branch_fns:
    captured = {}

    def shapes_only(*ops, fn=fn, captured=captured):
      outs, inner, taint = fn(*ops)
      captured["inner"], captured["taint"] = inner, taint
      return inner.values

    avals = jax.eval_shape(shapes_only, *[jax.ShapeDtypeStruct(jnp.shape(o), jnp.result_type(o))
                                          for o in operands])
    slots.append((captured["inner"], avals))
    out_taint = [a or b for a, b in zip(out_taint, captured["taint"])]

  def padded(i):
    def run(*ops):
      outs, inner, _ = branch_fns[i](*ops)
      decisions = []
      for j, (_, avals) in enumerate(slots):
        if j == i:
          decisions.extend(inner.values)
        else:
          decisions.extend(jnp.zeros(a.shape, a.dtype) for a in avals)
      return list(outs), decisions
    return run

  outs, decisions = lax.switch(index, [padded(i) for i in range(len(branches))], *operands)
  flat_sites = [site for inner, _ in slots for site in inner.sites]
  for site, value in zip(flat_sites, decisions):
    recorder.add(site, value)
  for inner, _ in slots:
    recorder.absorb_notes(inner)
  return outs, out_taint


def _interpret_while(eqn, invals, in_taint, recorder: _Recorder, scope: str,
                     source: str):
  params = eqn.params
  cond_jaxpr, cond_consts_closed = _unwrap(params["cond_jaxpr"])
  body_jaxpr, body_consts_closed = _unwrap(params["body_jaxpr"])
  n_cond, n_body = params["cond_nconsts"], params["body_nconsts"]
  cond_consts = invals[:n_cond]
  body_consts = invals[n_cond:n_cond + n_body]
  init = invals[n_cond + n_body:]
  any_taint = any(in_taint)
  ignored = _Recorder(record=False)

  def cond_fun(state):
    carry, _ = state
    outs, _ = _interpret(cond_jaxpr, cond_consts_closed, [*cond_consts, *carry],
                         [any_taint] * (n_cond + len(carry)), ignored, scope)
    return outs[0]

  def body_fun(state):
    carry, trips = state
    outs, _ = _interpret(body_jaxpr, body_consts_closed, [*body_consts, *carry],
                         [any_taint] * (n_body + len(carry)), ignored, scope)
    return list(outs), trips + 1

  carry, trips = lax.while_loop(cond_fun, body_fun, (list(init), jnp.zeros((), jnp.int32)))
  source = _describe_source(eqn, source)
  if any_taint:
    recorder.add(DecisionSite("while", "number of iterations", source, scope), trips)
    if _contains_decisions(body_jaxpr) or _contains_decisions(cond_jaxpr):
      recorder.note("not_inspected",
                    f"while at {source}: decisions inside the loop body are not followed "
                    "(its trip count is)")
  return list(carry), [any_taint] * len(carry)


class Inspection(NamedTuple):
  """What tracing a function with ``DecisionProgram`` found (static, known at trace time)."""
  sites: tuple[DecisionSite, ...]
  not_inspected: tuple[str, ...]
  precision_casts: tuple[str, ...]
  stop_gradients: tuple[str, ...]


class DecisionProgram:
  """A closed jaxpr evaluated together with its parameter-dependent decisions.

  ``program(*flat_args) -> (outputs, decisions)``; ``program.inspection`` describes the
  decisions (filled once the program has been called or traced).
  """

  def __init__(self, closed_jaxpr, tainted: Sequence[bool]):
    self._closed = closed_jaxpr
    self._tainted = list(tainted)
    self.inspection: Inspection | None = None

  def __call__(self, *flat_args):
    recorder = _Recorder()
    outs, _ = _interpret(self._closed.jaxpr, self._closed.consts, flat_args, self._tainted,
                         recorder, scope="", top=True)
    self.inspection = Inspection(tuple(recorder.sites), tuple(recorder.not_inspected),
                                 tuple(recorder.precision_casts), tuple(recorder.stop_gradients))
    return outs, list(recorder.values)


def decision_program(fn: Callable, *example_args, argnums: Sequence[int] = (0,)):
  """Traces ``fn(*example_args)`` and returns ``(program, treedef_of_args)``.

  The program takes the flattened leaves of ``example_args``; the leaves of the arguments in
  ``argnums`` are the parameters (their dependents are tracked).
  """
  closed = jax.make_jaxpr(fn)(*example_args)
  tainted = []
  for i, arg in enumerate(example_args):
    tainted.extend([i in argnums] * len(jax.tree_util.tree_leaves(arg)))
  return DecisionProgram(closed, tainted)


def decisions_changed(decisions, reference) -> jax.Array:
  """Per decision site, whether any element differs from the reference evaluation.

  Both-NaN entries count as equal (a NaN that is there anyway is not a crossing).
  """
  changed = []
  for value, base in zip(decisions, reference):
    differs = value != base
    if jnp.issubdtype(jnp.result_type(value), jnp.inexact):
      differs = differs & ~(jnp.isnan(value) & jnp.isnan(base))
    changed.append(jnp.any(differs))
  if not changed:
    return jnp.zeros((0,), bool)
  return jnp.stack(changed)


def inspect(fn: Callable, *example_args, argnums: Sequence[int] = (0,)) -> Inspection:
  """Lists the parameter-dependent decision sites of ``fn`` (no evaluation; tracing only)."""
  program = decision_program(fn, *example_args, argnums=argnums)
  flat = jax.tree_util.tree_leaves(example_args)
  jax.eval_shape(program, *flat)
  return program.inspection
