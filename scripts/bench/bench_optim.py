"""Benchmark: every research.optim rule against its optax counterpart, and against memory bandwidth.

For each rule, a jitted ``update + apply_updates`` step on a parameter pytree of ~16M float32 values
over 40 leaves of mixed shapes (dense and conv kernels, biases, norm scales), with the parameters and
optimizer state DONATED (updated in place) on both sides, timed in the same run and interleaved
(ours, optax, then optax, ours, ...) so that machine noise hits both alike; the best repeat counts.
Reports:

* ``ratio``: our time / optax's time (target <= 1.0);
* ``GB/s``: effective memory traffic = bytes of gradients, parameters and state read plus bytes of
  parameters and state written, per step, divided by the step time;
* ``% bw``: that traffic against a bandwidth this script measures itself (the fastest of a jitted
  in-place scale of the same pytree, of one large array, and a numpy copy, counting read + write;
  target >= 80%).

Usage:
    python3 scripts/bench_optim.py                       # all rules, ~16M values
    python3 scripts/bench_optim.py --rules=adam,sgd --steps=20 --repeats=7
"""
import time
from collections.abc import Callable

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import optim
from research.optim import validation

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_values", 16 * 1024 * 1024, "Approximate number of float32 parameters.")
flags.DEFINE_integer("steps", 10, "Steps per timed repeat.")
flags.DEFINE_integer("repeats", 7, "Timed repeats per implementation (best reported).")
flags.DEFINE_list("rules", ["sgd", "momentum", "nesterov", "nesterov_lookahead", "adagrad",
                            "rmsprop", "adam", "optax_adam_vs_itself"],
                  "Rules to benchmark (optax_adam_vs_itself: the noise-floor control).")

#: rule -> (ours, optax counterpart, number of state buffers the size of the parameters)
RULES: dict[str, tuple[Callable[[], optax.GradientTransformation],
                       Callable[[], optax.GradientTransformation], int]] = {
    "sgd": (lambda: optim.sgd(1e-3), lambda: optax.sgd(1e-3), 0),
    "momentum": (lambda: optim.momentum(1e-3, 0.9), lambda: optax.sgd(1e-3, momentum=0.9), 1),
    "nesterov": (lambda: optim.nesterov(1e-3, 0.9),
                 lambda: optax.sgd(1e-3, momentum=0.9, nesterov=True), 1),
    "nesterov_lookahead": (lambda: optim.nesterov_lookahead(1e-3, 0.9),
                           lambda: optax.sgd(1e-3, momentum=0.9, nesterov=True), 1),
    "adagrad": (lambda: optim.adagrad(1e-3), lambda: optax.adagrad(1e-3), 1),
    "rmsprop": (lambda: optim.rmsprop(1e-3),
                lambda: optax.rmsprop(1e-3, decay=0.99, eps=1e-8, eps_in_sqrt=False), 1),
    "adam": (lambda: optim.adam(1e-3), lambda: optax.adam(1e-3), 2),
    # A/A control: optax's adam against itself; its ratio shows the run's noise floor.
    "optax_adam_vs_itself": (lambda: optax.adam(1e-3), lambda: optax.adam(1e-3), 2),
}


def make_params(num_values: int) -> dict:
  """40 leaves: 10 blocks of a dense kernel, its bias, a 3x3 conv kernel and a norm scale."""
  widths = np.array([512, 640, 768, 896, 1024, 1024, 1152, 1280, 1408, 1536], np.float64)
  channels = np.array([64, 96, 128, 160, 192, 192, 224, 256, 288, 320], np.float64)
  base = np.sum(widths**2) + np.sum(9 * channels**2)
  scale = np.sqrt(num_values / base)
  params = {}
  for i, (width, channel) in enumerate(zip(widths, channels)):
    d, c = int(width * scale), int(channel * scale)
    params[f"block_{i}"] = {
        "dense": {"kernel": jnp.full((d, d), 0.01, jnp.float32),
                  "bias": jnp.zeros((d,), jnp.float32)},
        "conv": {"kernel": jnp.full((3, 3, c, c), 0.01, jnp.float32)},
        "norm": {"scale": jnp.ones((c,), jnp.float32)},
    }
  return params


def seconds_per_step(step, params, state, grads, steps):
  start = time.perf_counter()
  for _ in range(steps):
    params, state = step(params, state, grads)
  jax.block_until_ready((params, state))
  return (time.perf_counter() - start) / steps, params, state


def make_step(tx):
  def step(params, state, grads):
    deltas, state = tx.update(grads, state, params)
    return optax.apply_updates(params, deltas), state
  return jax.jit(step, donate_argnums=(0, 1))


def measure_bandwidth(params, repeats: int) -> float:
  """Bytes read + written per second by the fastest of three copies of the same data: a jitted
  in-place scale of the whole PYTREE (the same 40 leaves the rules update: XLA may run
  independent leaves on different cores, as it does for the rules), of one large array, and a
  numpy copy of it."""
  num_values = sum(leaf.size for leaf in jax.tree.leaves(params))

  def best_time(fn, x):
    x = fn(x)
    jax.block_until_ready(x)
    best = np.inf
    for _ in range(repeats):
      start = time.perf_counter()
      for _ in range(5):
        x = fn(x)
      jax.block_until_ready(x)
      best = min(best, (time.perf_counter() - start) / 5)
    return best

  scale = jax.jit(lambda tree: jax.tree.map(lambda x: x * 1.0000001, tree), donate_argnums=0)
  best = best_time(scale, jax.tree.map(jnp.copy, params))
  best = min(best, best_time(scale, jnp.ones((num_values,), jnp.float32)))
  source = np.ones(num_values, np.float32)
  target = np.empty_like(source)
  np.copyto(target, source)
  for _ in range(repeats):
    start = time.perf_counter()
    np.copyto(target, source)
    best = min(best, time.perf_counter() - start)
  return 2 * 4 * num_values / best


def bench_rule(name, params, grads, steps, repeats):
  ours_factory, optax_factory, num_buffers = RULES[name]
  sides = {}
  for label, factory in (("ours", ours_factory), ("optax", optax_factory)):
    tx = factory()
    step = make_step(tx)
    side_params = jax.tree.map(jnp.copy, params)
    side_state = tx.init(side_params)
    side_params, side_state = step(side_params, side_state, grads)  # compile + warm up
    jax.block_until_ready((side_params, side_state))
    sides[label] = [step, side_params, side_state, []]
  for repeat in range(repeats):
    # Alternate which side goes first, so neither always runs right after the other's traffic.
    for label in ("ours", "optax") if repeat % 2 == 0 else ("optax", "ours"):
      step, side_params, side_state, times = sides[label]
      seconds, side_params, side_state = seconds_per_step(step, side_params, side_state,
                                                             grads, steps)
      sides[label][1:3] = side_params, side_state
      times.append(seconds)
  # Best of the repeats (timeit's convention): the least disturbed by other processes on the
  # machine; the bandwidth reference is a best-of too.
  ours_time = float(np.min(sides["ours"][3]))
  optax_time = float(np.min(sides["optax"][3]))
  num_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(params))
  # read: gradients, parameters, state; written: parameters, state
  traffic = num_bytes * (1 + 1 + num_buffers + 1 + num_buffers)
  return ours_time, optax_time, traffic


def main(argv):
  del argv
  params = make_params(FLAGS.num_values)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
  num_values = sum(leaf.size for leaf in jax.tree.leaves(params))
  print(f"jax {jax.__version__}, optax {optax.__version__}, devices {jax.devices()}")
  print(f"parameters: {num_values / 1e6:.2f}M float32 values in {len(jax.tree.leaves(params))} "
        f"leaves; best of {FLAGS.repeats} repeats x {FLAGS.steps} steps")
  bandwidth = measure_bandwidth(params, FLAGS.repeats)
  print(f"measured bandwidth (copy, read + write): {bandwidth / 1e9:.1f} GB/s\n")
  header = f"{'rule':<20}{'ours ms':>9}{'optax ms':>10}{'ratio':>7}{'GB/s':>7}{'% bw':>7}"
  print(header)
  print("-" * len(header))
  for name in FLAGS.rules:
    validation.check_choice("rule", name, RULES)
    ours, theirs, traffic = bench_rule(name, params, grads, FLAGS.steps, FLAGS.repeats)
    throughput = traffic / ours
    print(f"{name:<20}{ours * 1e3:>9.2f}{theirs * 1e3:>10.2f}{ours / theirs:>7.2f}"
          f"{throughput / 1e9:>7.1f}{100 * throughput / bandwidth:>6.0f}%", flush=True)


if __name__ == "__main__":
  app.run(main)
