"""Benchmark: the update rules on a run's path, against optax and torch, and the memory limit.

For each rule and each parameter tree (default: 16.5M float32 values in 40 leaves, and a DRAM-bound
66M in 160 leaves; blocks of a dense kernel, its bias, a 3x3 conv kernel and a norm scale), one
update per step with the parameters and optimizer state updated in place (donated to the jitted
step; torch updates its tensors in place), gradients fixed. Side by side in ONE run, interleaved
(each repeat runs every side once, in a rotating order, so that the machine's noise hits all
alike):

* ``pure``: ``research.optim.get_optimizer(config.optimizer, ...)``, the transformation a run
  builds, as ``tx.update`` + ``optax.apply_updates`` with ``TRAINLAB_FUSED=0`` (XLA's loops);
* ``fused``: the same transformation through ``research.optim.fused.update_and_apply`` (the fused
  C++ kernels: one pass, ``p + delta`` written in place);
* ``fused d``: the kernels computing DELTAS inside ``tx.update`` (``TRAINLAB_FUSED=delta``), then
  ``optax.apply_updates``: what keeping the optax contract in the kernel costs;
* ``optax``: the optax counterpart (same traffic; ``-`` where optax has none);
* ``torch foreach`` / ``torch fused``: ``torch.optim`` with ``foreach=True`` / ``fused=True``
  (``-`` where torch has none: RMSprop has no fused CPU kernel, nothing implements Adam without
  bias correction);
* the in-place limit: a jitted in-place scale of the same tree (``x * c``, donated), timed in the
  same rotation. It moves 2 words per parameter; a rule's limit is its minimal traffic (read
  ``p``, ``g`` and the state, write ``p`` and the state: 3 words for sgd, 5 with one state buffer,
  7 for Adam) at that bandwidth, and ``% limit`` = limit time / the side's median time.

Reports, per tree, ms per step as ``median (min-max)`` over the repeats and ``% limit`` per side;
the goal is ``fused`` at or below ``torch fused`` and at >= 85% of the limit.

torch runs with ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it: with the default
policy its OpenMP threads spin at every barrier, and on a machine whose cores other processes
share a step takes 3-5x longer (66M-value Adam, fused: ~240 ms spinning, ~70 ms passive).

Usage:
    python3 scripts/bench/bench_optim.py                        # both trees, every rule
    python3 scripts/bench/bench_optim.py --trees=16.5:40 --rules=adam,sgd --repeats=5
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see above)

# pylint: disable=wrong-import-position
from collections.abc import Callable
from typing import Any

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from configs import default as default_config
from research import optim
from research.optim import fused, validation

FLAGS = flags.FLAGS
flags.DEFINE_list("trees", ["16.5:40", "66:160"],
                  "Parameter trees as MILLIONS_OF_VALUES:LEAVES (leaves a multiple of 4).")
flags.DEFINE_integer("steps", 10, "Steps per timed repeat.")
flags.DEFINE_integer("repeats", 7, "Timed repeats per side (median and min-max reported).")
flags.DEFINE_float("settle", 0.3, "Seconds of sleep before each timed run: torch's OpenMP threads "
                   "spin-wait after a step and would steal the cores from the next side.")
flags.DEFINE_list("rules", ["sgd", "momentum", "nesterov", "nesterov_lookahead", "adagrad",
                            "rmsprop", "adam", "adam_uncorrected"], "Rules to benchmark.")

LR = 1e-3

#: rule -> (config.optimizer overrides, optax counterpart or None, torch (class, kwargs, has fused)
#: or None, state buffers the size of the parameters)
RULES: dict[str, tuple[dict, Callable[[], optax.GradientTransformation] | None,
                       tuple[type, dict, bool] | None, int]] = {
    "sgd": ({"name": "sgd"}, lambda: optax.sgd(LR), (torch.optim.SGD, {}, True), 0),
    "momentum": ({"name": "momentum", "mu": 0.9}, lambda: optax.sgd(LR, momentum=0.9),
                 (torch.optim.SGD, {"momentum": 0.9}, True), 1),
    "nesterov": ({"name": "nesterov", "mu": 0.9},
                 lambda: optax.sgd(LR, momentum=0.9, nesterov=True),
                 (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}, True), 1),
    "nesterov_lookahead": ({"name": "nesterov_lookahead", "mu": 0.9},
                           lambda: optax.sgd(LR, momentum=0.9, nesterov=True),
                           (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}, True), 1),
    "adagrad": ({"name": "adagrad", "eps": 1e-8},
                lambda: optax.adagrad(LR, initial_accumulator_value=0.0, eps=1e-8),
                (torch.optim.Adagrad, {"eps": 1e-8}, True), 1),
    "rmsprop": ({"name": "rmsprop", "decay_rate": 0.99, "eps": 1e-8},
                lambda: optax.rmsprop(LR, decay=0.99, eps=1e-8, eps_in_sqrt=False),
                (torch.optim.RMSprop, {"alpha": 0.99, "eps": 1e-8}, False), 1),
    "adam": ({"name": "adam"}, lambda: optax.adam(LR), (torch.optim.Adam, {}, True), 2),
    "adam_uncorrected": ({"name": "adam", "bias_correction": False}, None, None, 2),
}

SIDES = ("pure", "fused", "fused d", "optax", "torch foreach", "torch fused")


def make_params(num_values: int, num_leaves: int) -> dict:
  """``num_leaves / 4`` blocks of a dense kernel, its bias, a 3x3 conv kernel and a norm scale."""
  validation.check_integer_at_least("leaves", num_leaves, 4)
  if num_leaves % 4:
    raise ValueError(f"leaves must be a multiple of 4, got {num_leaves}")
  blocks = num_leaves // 4
  widths = np.resize([512, 640, 768, 896, 1024, 1024, 1152, 1280, 1408, 1536], blocks)
  channels = np.resize([64, 96, 128, 160, 192, 192, 224, 256, 288, 320], blocks)
  scale = np.sqrt(num_values / (np.sum(widths**2.0) + np.sum(9 * channels**2.0)))
  params = {}
  for i, (width, channel) in enumerate(zip(widths, channels)):
    d, c = int(width * scale), int(channel * scale)
    params[f"block_{i}"] = {
        "dense": {"kernel": np.full((d, d), 0.01, np.float32), "bias": np.zeros((d,), np.float32)},
        "conv": {"kernel": np.full((3, 3, c, c), 0.01, np.float32)},
        "norm": {"scale": np.ones((c,), np.float32)},
    }
  return params


class JaxSide:
  """A jitted in-place step ``(params, state, grads) -> (params, state)`` and its buffers."""

  def __init__(self, step: Callable, params: Any, state: Any, grads: Any, mode: str):
    self.step = jax.jit(step, donate_argnums=(0, 1))
    self.params, self.state, self.grads = params, state, grads
    with fused.forced_mode(mode):  # traced and compiled here, in this mode
      self.run(1)

  def run(self, steps: int) -> None:
    params, state = self.params, self.state
    for _ in range(steps):
      params, state = self.step(params, state, self.grads)
    jax.block_until_ready((params, state))
    self.params, self.state = params, state


class TorchSide:
  """``optimizer.step()`` on torch tensors holding the same values (gradients fixed)."""

  def __init__(self, optimizer_class: type, kwargs: dict, params: dict, grads: list):
    tensors = [torch.from_numpy(np.array(p)) for p in jax.tree.leaves(params)]
    for tensor, grad in zip(tensors, grads):
      tensor.grad = grad
    self.optimizer = optimizer_class(tensors, lr=LR, **kwargs)
    self.run(1)  # creates the state

  def run(self, steps: int) -> None:
    with torch.no_grad():
      for _ in range(steps):
        self.optimizer.step()


def rule_sides(name: str, params: dict, grads: Any, torch_grads: list) -> dict[str, Any]:
  """Every side of ``name`` available (see the module doc), built and warmed up."""
  overrides, optax_factory, torch_spec, _ = RULES[name]
  config = default_config.get_config().optimizer
  config.learning_rate = LR
  config.update(overrides)
  tx = optim.get_optimizer(config, steps_per_epoch=100)

  def fresh():
    copy = jax.tree.map(jnp.array, params)
    return copy, tx.init(copy)

  def delta_step(tx):
    def step(p, s, g):
      deltas, s = tx.update(g, s, p)
      return optax.apply_updates(p, deltas), s
    return step

  sides = {
      "pure": JaxSide(delta_step(tx), *fresh(), grads, "0"),
      "fused": JaxSide(lambda p, s, g: fused.update_and_apply(tx, g, s, p), *fresh(), grads, "1"),
      "fused d": JaxSide(delta_step(tx), *fresh(), grads, "delta"),
  }
  if optax_factory is not None:
    reference = optax_factory()
    copy = jax.tree.map(jnp.array, params)
    sides["optax"] = JaxSide(delta_step(reference), copy, reference.init(copy), grads, "0")
  if torch_spec is not None:
    optimizer_class, kwargs, has_fused = torch_spec
    sides["torch foreach"] = TorchSide(optimizer_class, {**kwargs, "foreach": True}, params,
                                       torch_grads)
    if has_fused:
      sides["torch fused"] = TorchSide(optimizer_class, {**kwargs, "fused": True}, params,
                                       torch_grads)
  return sides


def minimal_words(name: str) -> int:
  """Words per parameter that rule ``name`` must move: read ``p``, ``g`` and each state buffer,
  write ``p`` and each state buffer (sgd 3, one state buffer 5, Adam 7)."""
  return 3 + 2 * RULES[name][3]


def make_limit(params: dict) -> JaxSide:
  """The in-place yardstick: ``x * c`` over the same tree, donated (2 words per parameter)."""

  def scale(p, s, g):
    del g
    return jax.tree.map(lambda x: x * jnp.float32(1.0000001), p), s

  return JaxSide(scale, jax.tree.map(jnp.array, params), (), None, "0")


def time_interleaved(sides: dict[str, Any], steps: int, repeats: int, settle: float
                     ) -> dict[str, np.ndarray]:
  """Seconds per step of every side, per repeat; each repeat runs the sides in a rotated order."""
  names = list(sides)
  times = {name: [] for name in names}
  for repeat in range(repeats):
    shift = repeat % len(names)
    for name in names[shift:] + names[:shift]:
      time.sleep(settle)
      start = time.perf_counter()
      sides[name].run(steps)
      times[name].append((time.perf_counter() - start) / steps)
  return {name: np.asarray(values) for name, values in times.items()}


def cell(seconds: np.ndarray | None) -> str:
  if seconds is None:
    return "-"
  ms = 1e3 * seconds
  return f"{np.median(ms):.1f} ({np.min(ms):.1f}-{np.max(ms):.1f})"


def bench_tree(millions: float, num_leaves: int) -> None:
  params = make_params(int(millions * 1e6), num_leaves)
  num_values = sum(leaf.size for leaf in jax.tree.leaves(params))
  grads = jax.tree.map(lambda p: jnp.full(p.shape, 1e-3, jnp.float32), params)
  torch_grads = [torch.full(p.shape, 1e-3, dtype=torch.float32) for p in jax.tree.leaves(params)]
  print(f"\n{num_values / 1e6:.2f}M float32 values in {num_leaves} leaves: ms per step, median "
        f"(min-max) of {FLAGS.repeats} repeats x {FLAGS.steps} steps; % of the in-place limit")
  header = (f"{'rule':<19}{'limit ms':>9}" + "".join(f"{side:>23}" for side in SIDES) +
            f"{'fused/torch fused':>19}")
  print(header)
  print("-" * len(header))
  percent_rows = []
  for name in FLAGS.rules:
    sides = rule_sides(name, params, grads, torch_grads)
    sides["limit"] = make_limit(params)
    times = time_interleaved(sides, FLAGS.steps, FLAGS.repeats, FLAGS.settle)
    limit = float(np.median(times["limit"])) * minimal_words(name) / 2
    ratio = (f"{np.median(times['fused']) / np.median(times['torch fused']):.2f}"
             if "torch fused" in times else "-")
    print(f"{name:<19}{1e3 * limit:>9.1f}" + "".join(f"{cell(times.get(side)):>23}"
                                                   for side in SIDES) + f"{ratio:>19}", flush=True)
    percent_rows.append((name, {side: 100 * limit / np.median(times[side])
                                for side in SIDES if side in times}))
    del sides
  print(f"\n{'% of the limit':<19}" + "".join(f"{side:>15}" for side in SIDES))
  for name, percents in percent_rows:
    print(f"{name:<19}" + "".join(
        f"{(f'{percents[side]:.0f}%' if side in percents else '-'):>15}" for side in SIDES))


def main(argv):
  del argv
  for name in FLAGS.rules:
    validation.check_choice("rule", name, RULES)
  trees = []
  for spec in FLAGS.trees:
    millions, _, leaves = spec.partition(":")
    trees.append((float(millions), int(leaves or 40)))
  print(f"jax {jax.__version__}, optax {optax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}), "
        f"devices {jax.devices()}; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
  print(f"update rules: {fused.status()}")
  if not fused.available():
    print("(the fused columns then time the pure-JAX path too)")
  for millions, leaves in trees:
    bench_tree(millions, leaves)


if __name__ == "__main__":
  app.run(main)
