"""Gradient check: the analytic gradient of any JAX function against finite differences.

``check_gradients(loss_fn, params, *args, **options) -> GradCheckReport`` compares, for a few
coordinates of *every* leaf of ``params``, the analytic gradient ``a = d loss_fn / d params``
(``jax.grad``, i.e. whatever custom VJPs the code defines) with the centered difference

    n = (f(x + h e_i) - f(x - h e_i)) / 2h                    (error O(h^2))

through the relative error ``|a - n| / max(|a|, |n|)`` (CS231n, "Gradient checks"; bands in
``research.checks.report``). It follows every caution of those notes:

* float64 whatever the model's dtype (params and float inputs are cast; x64 is switched on for the
  check only when it is off globally);
* kinks: each perturbed evaluation also returns the parameter-dependent "decisions" of the
  computation (which operand of a max won, which branch a ``where`` took, ...; see
  ``research.checks.kinks``); a coordinate whose ``x + h`` or ``x - h`` evaluation took another
  decision than ``x`` crossed a kink: it is reported apart and does not fail the check;
* tiny gradients: warns when the compared gradients sit below ~1e-10 and suggests a loss scale;
* roundoff: a coordinate with ``|a - n|`` below the resolution of the difference quotient
  (``~eps*|f|/h``) is as good as the numerical slope can tell; its (large) relative error is
  printed, not graded;
* every leaf (biases too), a few coordinates each (``research.checks.sampling``);
* the same arguments, PRNG keys included, for ``f(x + h)``, ``f(x - h)`` and the gradient, so
  dropout can stay on;
* a regularization term checked apart from the data term, with a warning when it dominates;
* a slice of the batch (``num_examples``), a burn-in of optimizer steps before checking, an ``h``
  sweep, and a directional check over the whole pytree for large models.

All perturbed evaluations of one leaf run as one ``jax.vmap`` (chunked with ``lax.map`` when the
copies of the leaf would be large) inside one ``jax.jit`` program, cached across calls.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.checks import kinks
from research.checks import report as report_lib
from research.checks import sampling
from research.checks.report import (BurnIn, DirectionalResult, GradCheckReport, LeafResult,
                                    SweepRow, error_band, relative_error)
from research.train.update import apply_update

FORMULAS = ("centered", "forward")
# The h sweep: 1e-1 .. 1e-12.
SWEEP_HS = tuple(10.0 ** -k for k in range(1, 13))
# A coordinate agrees "within roundoff" when |a - n| <= ROUNDOFF_FACTOR * eps * (|f+| + |f-|)/|dx|:
# each evaluation of f carries a rounding error of a few eps*|f|.
ROUNDOFF_FACTOR = 10.0
# Bound on the elements of the perturbed leaf copies one vmapped chunk materializes.
CHUNK_ELEMENTS = 1 << 22


@dataclasses.dataclass(frozen=True)
class GradCheckOptions:
  """Options of ``check_gradients``; the defaults are the safe choices.

  Attributes:
    h: finite-difference step (float64: eps**(1/3) ~ 6e-6 balances truncation and roundoff).
    formula: ``"centered"`` (O(h^2), the check) or ``"forward"`` (O(h), only to show its error).
    coords_per_leaf: coordinates sampled per leaf (0: directional check only).
    full_leaf_size: leaves with at most this many entries are checked entirely.
    num_directions: random unit directions over the whole pytree (two evaluations each).
    h_sweep: ``True`` for 1e-1..1e-12, or a sequence of steps: errors against ``h``.
    seed: for the sampled coordinates and directions.
    has_aux: ``loss_fn`` returns ``(loss, aux)``.
    regularization: ``reg(params) -> scalar``; the loss is then ``loss_fn + reg`` and the data
      and regularization parts are also checked apart.
    dominance_ratio: warn when ``|grad reg| > dominance_ratio * |grad data|``.
    num_examples: check on the first ``num_examples`` examples of the batch arguments.
    batch_argnums: which ``args`` hold the batch (default: every float/signed-int array argument
      with a leading axis; PRNG keys are never sliced).
    burn_in_steps: optimizer steps on the full batch before checking.
    optimizer: the optax transformation of the burn-in (default ``optax.adam(1e-3)``).
    optimizer_name: how the report names it.
    detect_kinks: trace the decisions (set False only for a function known to be smooth).
    float64: cast to float64 (False checks in the given dtype, to show why it matters).
    loss_scale: multiplies the loss (and so the gradients) before comparing.
    tiny_gradient: below this |g| the compared gradients are called tiny.
    name: printed in the report title.
  """
  h: float = 1e-5
  formula: str = "centered"
  coords_per_leaf: int = 10
  full_leaf_size: int = 0
  num_directions: int = 2
  h_sweep: bool | Sequence[float] = False
  seed: int = 0
  has_aux: bool = False
  regularization: Callable | None = None
  dominance_ratio: float = 10.0
  num_examples: int | None = None
  batch_argnums: Sequence[int] | None = None
  burn_in_steps: int = 0
  optimizer: optax.GradientTransformation | None = None
  optimizer_name: str = ""
  detect_kinks: bool = True
  float64: bool = True
  loss_scale: float = 1.0
  tiny_gradient: float = 1e-10
  name: str = ""


OPTION_NAMES = tuple(field.name for field in dataclasses.fields(GradCheckOptions))


def _is_count(value, minimum: int) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum


def _is_positive(value) -> bool:
  return (isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
          and math.isfinite(value) and value > 0)


def make_options(**options) -> GradCheckOptions:
  """Validates ``options`` (names and values) into a ``GradCheckOptions``."""
  unknown = sorted(set(options) - set(OPTION_NAMES))
  if unknown:
    raise TypeError(f"unknown gradient-check option(s) {unknown}; allowed: {list(OPTION_NAMES)}")
  opts = GradCheckOptions(**options)
  if not _is_positive(opts.h):
    raise ValueError(f"h must be a positive finite step, got {opts.h!r}")
  if opts.formula not in FORMULAS:
    raise ValueError(f"formula must be one of {FORMULAS}, got {opts.formula!r}")
  for name in ("coords_per_leaf", "full_leaf_size", "num_directions", "burn_in_steps", "seed"):
    if not _is_count(getattr(opts, name), 0):
      raise ValueError(f"{name} must be an integer >= 0, got {getattr(opts, name)!r}")
  if opts.coords_per_leaf == 0 and opts.full_leaf_size == 0 and opts.num_directions == 0:
    raise ValueError("nothing to check: coords_per_leaf, full_leaf_size and num_directions are "
                     "all 0")
  if opts.num_examples is not None and not _is_count(opts.num_examples, 1):
    raise ValueError(f"num_examples must be None or an integer >= 1, got {opts.num_examples!r}")
  if not isinstance(opts.h_sweep, bool):
    if not (isinstance(opts.h_sweep, (list, tuple, np.ndarray)) and len(opts.h_sweep) > 0
            and all(_is_positive(h) for h in opts.h_sweep)):
      raise ValueError(f"h_sweep must be True/False or a non-empty sequence of positive steps, "
                       f"got {opts.h_sweep!r}")
  for name in ("dominance_ratio", "loss_scale", "tiny_gradient"):
    if not _is_positive(getattr(opts, name)):
      raise ValueError(f"{name} must be a positive finite number, got {getattr(opts, name)!r}")
  if opts.regularization is not None and not callable(opts.regularization):
    raise TypeError(f"regularization must be a callable reg(params) -> scalar, got "
                    f"{opts.regularization!r}")
  if opts.optimizer is not None and not isinstance(opts.optimizer,
                                                   optax.GradientTransformation):
    raise TypeError(f"optimizer must be an optax.GradientTransformation, got {opts.optimizer!r}")
  return opts


# --- The function checked: one or two scalar parts, their sum is the loss. ---------------------


class _Spec(NamedTuple):
  """Static description of the checked function (hashable: a jit static argument)."""
  loss_fn: Callable
  regularization: Callable | None
  has_aux: bool
  loss_scale: float
  params_treedef: Any
  args_treedef: Any
  detect_kinks: bool
  chunk: int      # perturbed evaluations per vmapped chunk (bounds the parameter copies)


class _RegularizationAsLoss(NamedTuple):
  """``(params, *args) -> regularization(params)``: the regularization part inspected alone
  (a NamedTuple, so equal wrappers hash alike and the inspection cache works)."""
  regularization: Callable

  def __call__(self, params, *args):
    del args
    return self.regularization(params)


def _parts_fn(spec: _Spec) -> Callable:
  """``parts(params, *args) -> [data, reg]`` (or ``[loss]``), scaled, as a float vector."""

  def parts(params, *args):
    out = spec.loss_fn(params, *args)
    if spec.has_aux:
      out = out[0]
    values = [out]
    if spec.regularization is not None:
      values.append(spec.regularization(params))
    return jnp.stack([spec.loss_scale * jnp.asarray(v) for v in values])

  return parts


def _flat_fn(spec: _Spec) -> Callable:
  """``fn(param_leaves, arg_leaves) -> parts`` on flat leaf lists."""
  parts = _parts_fn(spec)

  def fn(param_leaves, arg_leaves):
    params = jax.tree_util.tree_unflatten(spec.params_treedef, param_leaves)
    args = jax.tree_util.tree_unflatten(spec.args_treedef, arg_leaves)
    return parts(params, *args)

  return fn


def _batched(fn: Callable, xs, chunk: int):
  """``jax.vmap(fn)(xs)``, in chunks of ``chunk`` (``lax.map``) when that bounds memory."""
  size = jax.tree_util.tree_leaves(xs)[0].shape[0]
  if chunk >= size:
    return jax.vmap(fn)(xs)
  return jax.lax.map(fn, xs, batch_size=chunk)


@functools.partial(jax.jit, static_argnames=("spec",))
def _evaluate(param_leaves, arg_leaves, leaf_ids, coords, steps, directions, direction_steps, *,
              spec: _Spec):
  """Loss parts, analytic gradients and every perturbed evaluation, in one program.

  Args:
    param_leaves, arg_leaves: flat leaves of params and args.
    leaf_ids, coords, steps: (E,) evaluation e sets ``leaf[leaf_ids[e]].flat[coords[e]] +=
      steps[e]``; all leaves' coordinates go through one vmap (one copy of the function in the
      compiled program, however many leaves).
    directions: per leaf, (D, *shape) unit directions; direction_steps: (2,) the signed steps.

  Returns a dict: ``parts`` (P,), ``grads`` (per leaf (P, *shape)), ``moved`` (E,) the perturbed
  coordinate's new value, ``losses`` (E, P), ``changed`` (E, sites), ``dir_losses`` (D, 2, P),
  ``dir_changed`` (D, 2, sites).
  """
  fn = _flat_fn(spec)
  if spec.detect_kinks:
    program = kinks.decision_program(fn, list(param_leaves), list(arg_leaves))

    def evaluate(leaves):
      outs, decisions = program(*leaves, *arg_leaves)
      return outs[0], decisions
  else:
    def evaluate(leaves):
      return fn(leaves, list(arg_leaves)), []

  base, base_decisions = evaluate(list(param_leaves))
  num_parts = base.shape[0]
  # Analytic gradients of each part (the user's VJPs): one backward pass per part.
  _, vjp = jax.vjp(lambda leaves: fn(leaves, list(arg_leaves)), list(param_leaves))
  grads = [jnp.stack(g) for g in zip(*[vjp(jnp.eye(num_parts, dtype=base.dtype)[p])[0]
                                       for p in range(num_parts)])]

  def crossed(decisions):
    # One trailing always-False column: lax.map cannot chunk a zero-sized axis (no sites).
    return jnp.append(kinks.decisions_changed(decisions, base_decisions), False)

  def at(evaluation):
    leaf_id, coord, step = evaluation
    leaves, moved = [], jnp.zeros((), base.dtype)
    for i, leaf in enumerate(param_leaves):
      hit = leaf_id == i
      flat = leaf.reshape(-1)
      index = jnp.where(hit, coord, 0)
      moved = jnp.where(hit, (flat[index] + step.astype(flat.dtype)).astype(base.dtype), moved)
      delta = jnp.where(hit, step, jnp.zeros_like(step)).astype(flat.dtype)
      leaves.append(flat.at[index].add(delta).reshape(leaf.shape))
    value, decisions = evaluate(leaves)
    return moved, value, crossed(decisions)

  out = {"parts": base, "grads": grads}
  if coords.shape[0]:
    out["moved"], out["losses"], out["changed"] = _batched(at, (leaf_ids, coords, steps),
                                                           spec.chunk)
  else:
    out["moved"] = jnp.zeros((0,), base.dtype)
    out["losses"] = jnp.zeros((0, num_parts), base.dtype)
    out["changed"] = jnp.zeros((0, len(base_decisions) + 1), bool)

  def along(direction, step):
    leaves = [leaf + step.astype(leaf.dtype) * d for leaf, d in zip(param_leaves, direction)]
    value, decisions = evaluate(leaves)
    return value, crossed(decisions)

  if directions and directions[0].shape[0]:
    def both_signs(direction):
      return jax.vmap(lambda s: along(direction, s))(direction_steps)
    out["dir_losses"], out["dir_changed"] = jax.vmap(both_signs)(directions)
  else:
    out["dir_losses"] = jnp.zeros((0, 2, num_parts), base.dtype)
    out["dir_changed"] = jnp.zeros((0, 2, len(base_decisions) + 1), bool)
  return out


_INSPECTIONS: dict = {}
_CHECKED_SCALAR: set = set()


def _inspection(spec: _Spec, param_leaves, arg_leaves) -> kinks.Inspection:
  """The decision sites of the checked function (cached like the jit program)."""
  if not spec.detect_kinks:
    return kinks.Inspection((), (), (), ())
  key = (spec, tuple((x.shape, str(x.dtype)) for x in [*param_leaves, *arg_leaves]))
  if key not in _INSPECTIONS:
    program = kinks.decision_program(_flat_fn(spec), list(param_leaves), list(arg_leaves))
    jax.eval_shape(program, *param_leaves, *arg_leaves)
    if len(_INSPECTIONS) > 64:
      _INSPECTIONS.clear()
    _INSPECTIONS[key] = program.inspection
  return _INSPECTIONS[key]


# --- Preparing inputs: float64, the batch slice, validation. -----------------------------------


def _to_float64(tree, enabled: bool):
  """Float leaves cast to float64 (others untouched); also returns the original float dtypes."""
  dtypes = set()

  def cast(x):
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.floating):
      dtypes.add(np.dtype(dtype).name)
      # On the host (numpy): an eager device cast would compile one tiny program per shape.
      return np.asarray(x, np.float64) if enabled else x
    if jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_:
      return np.asarray(x)     # labels: sliced on the host too
    return x                   # PRNG keys and anything else: untouched

  return jax.tree_util.tree_map(cast, tree), dtypes


def _validate_params(params) -> list[str]:
  paths = sampling.leaf_paths(params)
  leaves = jax.tree_util.tree_leaves(params)
  if not leaves:
    raise ValueError("params has no leaves: nothing to check")
  for path, leaf in zip(paths, leaves):
    dtype = jnp.result_type(leaf)
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"params leaf '{path}' has dtype {dtype}; only floating-point leaves can "
                      "be checked (pass integer or key state through *args instead)")
  return paths


def _is_key(x) -> bool:
  dtype = jnp.result_type(x)
  return jnp.issubdtype(dtype, jax.dtypes.prng_key) or dtype == jnp.uint32


def _batch_size_of(arg) -> int | None:
  """Leading size of an argument whose every leaf is a batchable array, else None."""
  leaves = jax.tree_util.tree_leaves(arg)
  if not leaves:
    return None
  sizes = set()
  for leaf in leaves:
    if not hasattr(leaf, "shape") or jnp.ndim(leaf) == 0 or _is_key(leaf):
      return None
    if not (jnp.issubdtype(jnp.result_type(leaf), jnp.floating)
            or jnp.issubdtype(jnp.result_type(leaf), jnp.signedinteger)
            or jnp.result_type(leaf) == jnp.bool_):
      return None
    sizes.add(jnp.shape(leaf)[0])
  return sizes.pop() if len(sizes) == 1 else None


def slice_batch(args: tuple, num_examples: int, batch_argnums: Sequence[int] | None) -> tuple:
  """``args`` with the batch arguments cut to their first ``num_examples`` examples."""
  if batch_argnums is None:
    batch_argnums = [i for i, arg in enumerate(args) if _batch_size_of(arg) is not None]
    sizes = {i: _batch_size_of(args[i]) for i in batch_argnums}
    if len(set(sizes.values())) > 1:
      raise ValueError(f"cannot tell which arguments hold the batch: leading sizes {sizes} "
                       "(argument index: size) differ; pass batch_argnums=(...)")
  if not batch_argnums:
    raise ValueError("num_examples is set but no argument has a batch axis; pass batch_argnums")
  sliced = list(args)
  for i in batch_argnums:
    if not (isinstance(i, (int, np.integer)) and 0 <= i < len(args)):
      raise ValueError(f"batch_argnums entry {i!r} is not an index of the {len(args)} args")
    sliced[i] = jax.tree_util.tree_map(lambda x: x[:num_examples], args[i])
  return tuple(sliced)


def _check_scalar(spec: _Spec, params, args) -> None:
  """Clear errors for a loss that is not a float scalar."""
  def first(params, *args):
    return spec.loss_fn(params, *args)

  out = jax.eval_shape(first, params, *args)
  if spec.has_aux:
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
      raise TypeError(f"has_aux=True but loss_fn returned {out!r}, not a (loss, aux) pair")
    out = out[0]
  if not hasattr(out, "shape"):
    hint = " (it returns a tuple: pass has_aux=True if it is (loss, aux))" \
        if isinstance(out, (tuple, list)) else ""
    raise TypeError(f"loss_fn must return a scalar, got {out!r}{hint}")
  if out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
    raise TypeError(f"loss_fn must return a float scalar, got shape {out.shape} dtype "
                    f"{out.dtype}; reduce it (e.g. mean over the batch) before checking")
  if spec.regularization is not None:
    reg = jax.eval_shape(spec.regularization, params)
    if not hasattr(reg, "shape") or reg.shape != () or not jnp.issubdtype(reg.dtype,
                                                                          jnp.floating):
      raise TypeError(f"regularization must return a float scalar, got {reg!r}")


# --- Burn-in. -----------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("spec", "optimizer", "steps"))
def _burn_in(param_leaves, arg_leaves, *, spec: _Spec, optimizer, steps: int):
  fn = _flat_fn(spec)

  def total(leaves):
    return jnp.sum(fn(leaves, list(arg_leaves)))

  def step(carry, _):
    # The training engine's update (gradient point of the look-ahead form, value_fn for
    # second-order rules): the burn-in runs the algorithm a training run would.
    update = apply_update(optimizer, lambda p: (total(p), None), *carry)
    return (update.params, update.opt_state), update.loss

  leaves = list(param_leaves)
  (leaves, _), losses = jax.lax.scan(step, (leaves, optimizer.init(leaves)), None, length=steps)
  return leaves, losses[0], total(leaves)


# --- Building the report. -----------------------------------------------------------------------


def _step_plan(indices: list[np.ndarray], hs: Sequence[float], formula: str):
  """Per leaf: (coords, steps) over (h, sign, coordinate); sign +h, -h (centered) or +h."""
  signs = (1.0, -1.0) if formula == "centered" else (1.0,)
  plan = []
  for idx in indices:
    coords = np.tile(idx, len(hs) * len(signs)).astype(np.int32)
    steps = np.repeat([s * h for h in hs for s in signs], idx.size)
    plan.append((coords, steps))
  return plan


def _numerical(losses, moved, base, num_h: int, k: int, formula: str, leaf_value):
  """Per h: numerical slopes (k, P), step taken (k,) and the |f| scale (k,), from the layout
  of ``_step_plan``. The denominator is the step actually represented, ``(x+h) - (x-h)``."""
  signs = 2 if formula == "centered" else 1
  losses = losses.reshape(num_h, signs, k, -1)
  moved = moved.reshape(num_h, signs, k)
  if formula == "centered":
    dx = moved[:, 0] - moved[:, 1]
    df = losses[:, 0] - losses[:, 1]
    scale = np.abs(losses[:, 0]) + np.abs(losses[:, 1])
  else:
    dx = moved[:, 0] - leaf_value[None, :]
    df = losses[:, 0] - base[None, None, :]
    scale = np.abs(losses[:, 0]) + np.abs(base)[None, None, :]
  return df / dx[..., None], dx, scale


def _site_names(sites) -> list[str]:
  return [str(site) for site in sites]


def _leaf_result(path, leaf, idx, analytic, numerical, crossed_matrix, within_roundoff, names,
                 has_kinks) -> LeafResult:
  rel = relative_error(analytic, numerical)
  crossed = crossed_matrix.any(axis=1) if crossed_matrix.size else np.zeros(idx.size, bool)
  crossed_sites = tuple(tuple(names[s] for s in np.flatnonzero(row)) for row in crossed_matrix) \
      if crossed_matrix.size else tuple(() for _ in range(idx.size))
  result = LeafResult(path=path, shape=tuple(leaf.shape), dtype=str(leaf.dtype), indices=idx,
                      analytic=analytic, numerical=numerical, rel_error=rel,
                      crossed_kink=crossed, crossed_sites=crossed_sites, band="", ok=True,
                      within_roundoff=within_roundoff)
  graded = result._clean
  if idx.size == 0:
    band = report_lib.NOT_CHECKED
  elif not graded.any():
    band = report_lib.INCONCLUSIVE if crossed.all() else report_lib.GOOD
  else:
    band = error_band(result.max_rel_error, has_kinks)
  ok = band in report_lib.PASSING_BANDS or band == report_lib.INCONCLUSIVE
  return dataclasses.replace(result, band=band, ok=ok)


def _suggest_scale(magnitude: float) -> float:
  """A power of ten that brings ``magnitude`` near 1."""
  return float(10.0 ** round(-math.log10(magnitude)))


@dataclasses.dataclass
class _Context:
  """What is common to the parts' reports."""
  paths: list
  leaves: list
  indices: list
  hs: tuple
  opts: GradCheckOptions
  inspection: kinks.Inspection
  precision: str
  burn_in: BurnIn | None
  extra_warnings: list
  directions: list      # per leaf (D, *shape) unit directions


def _part_report(ctx: _Context, result: dict, part: int | None, name: str, *,
                 smooth_part: bool = False) -> GradCheckReport:
  """The report of one part (``part`` index) or of the sum of the parts (``None``).

  ``smooth_part``: the part, inspected alone, has no decisions (e.g. an L2 penalty): it is graded
  as smooth, and kink crossings of the other part excuse none of its coordinates.
  """
  opts = ctx.opts
  select = (lambda a: a.sum(axis=-1)) if part is None else (lambda a: a[..., part])
  base_all = np.asarray(result["parts"])
  base = select(base_all)
  names = _site_names(ctx.inspection.sites)
  has_kinks = (bool(ctx.inspection.sites) or not opts.detect_kinks) and not smooth_part
  num_h = len(ctx.hs)
  leaf_results, sweep_errors = [], [[] for _ in ctx.hs]
  sweep_kinks = [0] * num_h
  grad_leaves = []
  eps = float(np.finfo(base_all.dtype).eps)
  for path, leaf, idx, grads, losses, moved, changed in zip(
      ctx.paths, ctx.leaves, ctx.indices, result["grads"], result["losses"], result["moved"],
      result["changed"]):
    grad = select(np.moveaxis(np.asarray(grads), 0, -1))
    grad_leaves.append(grad)
    k = idx.size
    analytic = grad.reshape(-1)[idx]
    if k == 0:
      empty = np.zeros(0)
      leaf_results.append(_leaf_result(path, leaf, idx, empty, empty, np.zeros((0, 0), bool),
                                       np.zeros(0, bool), names, has_kinks))
      continue
    losses = select(np.asarray(losses))[..., None]
    leaf_flat = np.asarray(leaf).reshape(-1)[idx]
    slopes, dx, scale = _numerical(losses, np.asarray(moved), np.atleast_1d(base), num_h, k,
                                   opts.formula, leaf_flat)
    slopes, scale = slopes[..., 0], scale[..., 0]
    signs = 2 if opts.formula == "centered" else 1
    changed = np.asarray(changed).reshape(num_h, signs, k, -1).any(axis=1)
    if smooth_part:
      changed = np.zeros_like(changed)
    for j in range(num_h):
      rel = relative_error(analytic, slopes[j])
      clean = ~changed[j].any(axis=-1) if changed.shape[-1] else np.ones(k, bool)
      sweep_errors[j].append(rel[clean])
      sweep_kinks[j] += int(np.sum(~clean))
    # Only coordinates that would otherwise fail the smooth bar are excused by roundoff.
    within = ((np.abs(analytic - slopes[0]) <= ROUNDOFF_FACTOR * eps * scale[0] / np.abs(dx[0]))
              & (relative_error(analytic, slopes[0]) > report_lib.GOOD_AT_MOST))
    leaf_results.append(_leaf_result(path, leaf, idx, analytic, slopes[0], changed[0], within,
                                     names, has_kinks))

  gradient_norm = float(np.sqrt(sum(np.sum(g ** 2) for g in grad_leaves)))
  directional = _directional(ctx, result, select, grad_leaves, names, has_kinks,
                             count_crossings=not smooth_part)
  sweep = None
  if opts.h_sweep:
    sweep = []
    for h, errors in zip(ctx.hs, sweep_errors):
      errors = np.concatenate(errors) if errors else np.zeros(0)
      sweep.append(SweepRow(h=h, max_rel_error=float(errors.max()) if errors.size else math.nan,
                            median_rel_error=float(np.median(errors)) if errors.size
                            else math.nan,
                            num_kinks=sweep_kinks[ctx.hs.index(h)],
                            num_checked=sum(i.size for i in ctx.indices)))
    swept = SWEEP_HS if opts.h_sweep is True else tuple(float(h) for h in opts.h_sweep)
    sweep = tuple(sorted((row for row in sweep if row.h in swept), key=lambda row: -row.h))
  warnings = list(ctx.extra_warnings)
  suggested = _tiny_gradient_warnings(leaf_results, opts.tiny_gradient, warnings)
  for leaf in leaf_results:
    if leaf.band == report_lib.INCONCLUSIVE:
      warnings.append(f"every checked coordinate of '{leaf.path}' crossed a kink: use a smaller "
                      "h, fewer examples (num_examples) or more coordinates")
  ok = all(leaf.ok for leaf in leaf_results) and all(d.ok for d in directional)
  return GradCheckReport(
      ok=ok, name=name, leaves=tuple(leaf_results), loss_value=float(base), h=opts.h,
      formula=opts.formula, precision=ctx.precision, has_kinks=has_kinks,
      kink_sites=ctx.inspection.sites, not_inspected=ctx.inspection.not_inspected,
      precision_casts=ctx.inspection.precision_casts,
      stop_gradients=ctx.inspection.stop_gradients, warnings=tuple(warnings),
      directional=tuple(directional), sweep=sweep, burn_in=ctx.burn_in,
      gradient_norm=gradient_norm, roundoff_floor=eps * abs(float(base)) / opts.h,
      loss_scale=opts.loss_scale, suggested_loss_scale=suggested)


def _directional(ctx: _Context, result, select, grad_leaves, names, has_kinks, *,
                 count_crossings: bool = True):
  losses = select(np.asarray(result["dir_losses"]))           # (D, 2)
  changed = np.asarray(result["dir_changed"])                  # (D, 2, sites)
  if not count_crossings:
    changed = np.zeros_like(changed)
  eps = float(np.finfo(losses.dtype).eps)
  out = []
  for d in range(losses.shape[0]):
    analytic = float(sum(np.sum(g * u[d]) for g, u in zip(grad_leaves, ctx.directions)))
    numerical = float((losses[d, 0] - losses[d, 1]) / (2 * ctx.opts.h))
    flipped = changed[d].any(axis=0) if changed.shape[-1] else np.zeros(0, bool)
    rel = float(relative_error(analytic, numerical))
    crossed = bool(flipped.any())
    band = error_band(rel, has_kinks)
    # As for coordinates: a difference below the resolution of the quotient is all it can tell.
    resolution = ROUNDOFF_FACTOR * eps * float(np.abs(losses[d]).sum()) / (2 * ctx.opts.h)
    within = abs(analytic - numerical) <= resolution and band not in report_lib.PASSING_BANDS
    ok = crossed or within or band in report_lib.PASSING_BANDS
    out.append(DirectionalResult(analytic=analytic, numerical=numerical, rel_error=rel,
                                 crossed_kink=crossed,
                                 crossed_sites=tuple(names[s] for s in np.flatnonzero(flipped)),
                                 band=band, ok=ok, within_roundoff=within))
  return out


def _tiny_gradient_warnings(leaf_results, threshold: float, warnings: list) -> float | None:
  """Warns about leaves whose compared gradients are all tiny; returns a suggested loss scale."""
  tiny = []
  for leaf in leaf_results:
    clean = ~leaf.crossed_kink
    magnitudes = np.maximum(np.abs(leaf.analytic[clean]), np.abs(leaf.numerical[clean]))
    if magnitudes.size and 0 < magnitudes.max() < threshold:
      tiny.append((leaf.path, float(magnitudes.max())))
  if not tiny:
    return None
  largest = max(m for _, m in tiny)
  scale = _suggest_scale(largest)
  listed = ", ".join(f"'{path}' (|g| <= {m:.1e})" for path, m in tiny)
  warnings.append(f"tiny gradients below {threshold:g} in {listed}: outside the comfortable "
                  f"range of floating point, where rounding dominates; multiply the loss by "
                  f"loss_scale={scale:g} to bring them near 1")
  return scale


# --- The entry point. ---------------------------------------------------------------------------


def check_gradients(loss_fn: Callable, params: Any, *args, **options) -> GradCheckReport:
  """Checks ``jax.grad(loss_fn)`` against finite differences (see the module docstring).

  Args:
    loss_fn: ``loss_fn(params, *args) -> scalar`` (or ``(scalar, aux)`` with ``has_aux=True``);
      with ``regularization``, the data part of the loss.
    params: a pytree of floating-point arrays (any dtype; the check runs in float64).
    *args: the other arguments (batch, labels, PRNG key, ...), held fixed: every evaluation and
      the analytic gradient see the same values, keys included.
    **options: see ``GradCheckOptions`` (unknown names raise ``TypeError`` listing the allowed).

  Returns:
    A ``GradCheckReport``: ``.ok``, per-leaf ``.leaves``, ``.parts`` ('data' and
    'regularization' when a regularization is given), ``str(report)`` prints the table.
  """
  opts = make_options(**options)
  if not callable(loss_fn):
    raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
  paths = _validate_params(params)
  x64_was_on = bool(jax.config.jax_enable_x64)
  with jax.enable_x64(opts.float64 or x64_was_on):
    return _check(loss_fn, params, args, opts, paths, x64_was_on)


def _check(loss_fn, params, args, opts: GradCheckOptions, paths, x64_was_on: bool):
  params, param_dtypes = _to_float64(params, opts.float64)
  args, arg_dtypes = _to_float64(args, opts.float64)
  param_leaves, params_treedef = jax.tree_util.tree_flatten(params)
  full_args = args
  if opts.num_examples is not None:
    args = slice_batch(args, opts.num_examples, opts.batch_argnums)
  arg_leaves, args_treedef = jax.tree_util.tree_flatten(args)
  if opts.float64:
    casted = sorted((param_dtypes | arg_dtypes) - {"float64"})
    precision = "float64" + (f" (cast from {', '.join(casted)})" if casted else "")
    precision += ("; x64 already on" if x64_was_on
                  else "; x64 switched on for the check only (off globally)")
  else:
    precision = f"{', '.join(sorted(param_dtypes))} (float64 casting off: expect worse errors)"

  def spec_for(leaves, chunk):
    return _Spec(loss_fn, opts.regularization, opts.has_aux, float(opts.loss_scale),
                 params_treedef, args_treedef, opts.detect_kinks, chunk)

  scalar_key = (spec_for(param_leaves, 0),
                tuple((x.shape, str(x.dtype)) for x in [*param_leaves, *arg_leaves]))
  if scalar_key not in _CHECKED_SCALAR:  # Traces the loss once; cached like the jit program.
    _check_scalar(scalar_key[0], params, args)
    _CHECKED_SCALAR.add(scalar_key)

  burn_in = None
  if opts.burn_in_steps:
    full_leaves, full_treedef = jax.tree_util.tree_flatten(full_args)
    optimizer = opts.optimizer or optax.adam(1e-3)
    burn_spec = spec_for(param_leaves, 0)._replace(args_treedef=full_treedef)
    param_leaves, before, after = _burn_in(param_leaves, full_leaves, spec=burn_spec,
                                           optimizer=optimizer, steps=int(opts.burn_in_steps))
    name = opts.optimizer_name or ("optax.adam(1e-3)" if opts.optimizer is None
                                   else "the given optimizer")
    burn_in = BurnIn(steps=int(opts.burn_in_steps), optimizer=name, loss_before=float(before),
                     loss_after=float(after))

  shapes = [tuple(leaf.shape) for leaf in param_leaves]
  indices = sampling.sample_coordinates(shapes, opts.coords_per_leaf, opts.full_leaf_size,
                                        opts.seed)
  hs = (float(opts.h),)
  if opts.h_sweep:
    sweep = SWEEP_HS if opts.h_sweep is True else tuple(float(h) for h in opts.h_sweep)
    hs = hs + tuple(h for h in sweep if h != float(opts.h))
  plan = _step_plan(indices, hs, opts.formula)
  param_leaves = [np.asarray(leaf) for leaf in param_leaves]   # after the burn-in
  dtype = param_leaves[0].dtype
  leaf_ids = np.concatenate([np.full(c.size, i, np.int32) for i, (c, _) in enumerate(plan)])
  coords = np.concatenate([c for c, _ in plan]).astype(np.int32)
  steps = np.concatenate([s for _, s in plan]).astype(dtype)
  total_size = sum(int(np.prod(shape)) for shape in shapes)
  spec = spec_for(param_leaves, max(1, CHUNK_ELEMENTS // max(1, total_size)))
  directions = [d.astype(dtype) for d in
                sampling.random_directions(shapes, opts.num_directions, opts.seed + 1)]
  direction_steps = np.asarray([opts.h, -opts.h], dtype)

  inspection = _inspection(spec, param_leaves, arg_leaves)
  result = _evaluate(param_leaves, arg_leaves, leaf_ids, coords, steps, directions,
                     direction_steps, spec=spec)
  result = jax.tree_util.tree_map(np.asarray, result)
  result["changed"] = result["changed"][..., :-1]
  result["dir_changed"] = result["dir_changed"][..., :-1]
  # Back to per-leaf blocks, in the layout of _step_plan.
  offsets = np.cumsum([c.size for c, _ in plan])[:-1]
  for key in ("moved", "losses", "changed"):
    result[key] = np.split(result[key], offsets)
  ctx = _Context(paths=paths, leaves=param_leaves, indices=indices, hs=hs, opts=opts,
                 inspection=inspection, precision=precision, burn_in=burn_in, extra_warnings=[],
                 directions=[np.asarray(d) for d in directions])

  name = opts.name
  if opts.regularization is None:
    return _part_report(ctx, result, None, name or "loss")
  data = _part_report(ctx, result, 0, "data")
  reg_spec = spec._replace(loss_fn=_RegularizationAsLoss(opts.regularization), regularization=None,
                           has_aux=False)
  reg_smooth = opts.detect_kinks and not _inspection(reg_spec, param_leaves, arg_leaves).sites
  reg = _part_report(ctx, result, 1, "regularization", smooth_part=reg_smooth)
  ratio = reg.gradient_norm / data.gradient_norm if data.gradient_norm > 0 else math.inf
  if ratio > opts.dominance_ratio:
    ctx.extra_warnings.append(
        f"the regularization gradient dominates the data gradient: |grad reg| = "
        f"{reg.gradient_norm:.3e} is {ratio:.3g}x |grad data| = {data.gradient_norm:.3e}; "
        "a wrong data gradient can pass the total's check, see the 'data' part")
  total = _part_report(ctx, result, None, name or "total")
  parts = {"data": data, "regularization": reg}
  return dataclasses.replace(total, ok=total.ok and data.ok and reg.ok, parts=parts)
