r"""Throughput of the jitted train step against a plain hand-written jax+optax step and torch.

    python scripts/bench/bench_train.py                 # digits MLP and CNN, batch 64
    python scripts/bench/bench_train.py --batch_size=256 --repeats=7

Rows (examples/s, best of ``--repeats`` timed passes over ``--steps`` batches, interleaved so
machine noise hits all variants alike):

* ``plain``: ``value_and_grad`` + ``optax.adam`` + ``apply_updates`` on a params/opt_state pair,
  jitted with donation — the reference a researcher would write by hand;
* ``ours``: ``research.train.make_train_step`` (TrainState, Nesterov-aware gradient point, our
  Adam with hyperparameters in the state), monitors off;
* ``ours-fixed-hp``: the same step with the plain rule ``research.optim.rules.adam_rule``, its
  hyperparameters compiled in as constants (``research.optim.adam`` and ``get_optimizer`` keep
  them in the optimizer state through ``optax.inject_hyperparams``, so that schedules,
  reduce-on-plateau and population search change them without recompiling). Both rows apply the
  update in the fused kernel; the gap between them is the price of hyperparameters in the state
  (a few scalar operations per step on values read from the state instead of folded constants);
* ``ours+monitors``: the training loop's pattern: the monitored step (update ratios, activation
  and gradient histograms) every ``--every`` steps, written by the background MetricsWriter;
* ``plain-scan`` / ``ours-scan``: the same two steps, ``--scan`` of them per dispatch in one
  ``lax.scan`` (what ``config.train.steps_per_call`` does in the training loop);
* ``members P=k (scan|loop|each)``: ``research.train.train_members``'s epoch for k members
  (``lax.scan`` over the vmapped step, a loop of its dispatches, or the members one after another
  with the single step); the rate is per member, so it
  compares with ``ours`` directly (a population must not be slower per member than single runs);
* ``torch``: the same network and Adam in torch on CPU (when torch is installed).
Batches are device arrays prepared beforehand, so the rows time the step, not the data path.
Each row is the median of ``--repeats`` passes (min-max in brackets), the variants interleaved;
ratios are against ``plain`` measured in the same run.
"""
import os
import shutil
import tempfile
import time

# torch's OpenMP threads spin while they wait; on a shared 2-core machine that starves everything
# else (and torch itself: 10-100x slower steps). Passive waiting, unless the caller chose.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from absl import flags

from research import launch



_BATCH = flags.DEFINE_integer("batch_size", 64, "Examples per step.")
_STEPS = flags.DEFINE_integer("steps", 200, "Steps per timed pass.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed passes per variant (best reported).")
_EVERY = flags.DEFINE_integer("every", 20, "Monitored step every N steps in ours+monitors.")
_MODELS = flags.DEFINE_list("models", ["mlp", "cnn"], "Models to time.")
_SCAN = flags.DEFINE_integer("scan", 10, "Steps per dispatch of the scanned variants.")
_MEMBERS = flags.DEFINE_integer("members", 4, "Members of the members-trainer rows.")


def _jax_variants(config, dataset, batch, steps, every):
  import jax
  import jax.numpy as jnp
  import optax
  from research import models, monitor, optim, train

  model = models.create_model(config.model, dataset.num_classes, dataset.image_shape)
  rng = jax.random.PRNGKey(0)
  n = len(dataset.x_train)
  idx = [(i * batch) % (n - batch) for i in range(steps)]
  xs = [jnp.asarray(dataset.x_train[i:i + batch]) for i in idx]
  ys = [jnp.asarray(dataset.y_train[i:i + batch]) for i in idx]

  # The hand-written reference.
  ref_tx = optax.adam(config.optimizer.learning_rate)

  def plain_update(params, opt_state, x, y):
    def loss_fn(p):
      logits = model.apply({"params": p}, x, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = ref_tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  plain_step = jax.jit(plain_update, donate_argnums=(0, 1))

  tx = optim.get_optimizer(config.optimizer, steps_per_epoch=n // batch)
  ours_step = jax.jit(train.make_train_step(model, tx, config), donate_argnums=0)
  # The plain rule (research.optim.rules.adam_rule): no optax.inject_hyperparams around it, so its
  # hyperparameters are compiled in as constants (optim.adam itself injects them).
  fixed_tx = optim.rules.adam_rule(config.optimizer.learning_rate, config.optimizer.beta1,
                                   config.optimizer.beta2, config.optimizer.eps)
  fixed_step = jax.jit(train.make_train_step(model, fixed_tx, config), donate_argnums=0)
  monitored_step = jax.jit(train.make_train_step(model, tx, config, monitored=True),
                           donate_argnums=0)

  def run_plain():
    params = model.init(rng, xs[0])["params"]
    opt_state = ref_tx.init(params)
    jax.block_until_ready(params)
    start = time.perf_counter()
    for x, y in zip(xs, ys):
      params, opt_state, loss = plain_step(params, opt_state, x, y)
    jax.block_until_ready(loss)
    return time.perf_counter() - start

  def run_ours(monitors, step_tx=tx, step_fn=ours_step):
    state = train.create_train_state(config, model, step_tx, rng, dataset)
    workdir = tempfile.mkdtemp(prefix="bench_train_") if monitors else None
    writer = monitor.MetricsWriter(workdir) if monitors else None
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i, (x, y) in enumerate(zip(xs, ys)):
      if monitors and i % every == 0:
        state, metrics = monitored_step(state, x, y)
        writer.write_sample(i / steps, metrics["update_ratio"], metrics["layers"])
      else:
        state, metrics = step_fn(state, x, y)
    jax.block_until_ready(metrics["loss"])
    seconds = time.perf_counter() - start
    if writer is not None:
      writer.close()
      shutil.rmtree(workdir, ignore_errors=True)
    return seconds

  # Several steps per dispatch: lax.scan over stacked batches.
  scan = _SCAN.value
  chunks = steps // scan
  xs_stacked = [jnp.stack(xs[i * scan:(i + 1) * scan]) for i in range(chunks)]
  ys_stacked = [jnp.stack(ys[i * scan:(i + 1) * scan]) for i in range(chunks)]

  def plain_many(params, opt_state, xs_, ys_):
    def body(carry, batch_):
      params_, opt_state_, _ = plain_update(*carry[:2], *batch_)
      return (params_, opt_state_, 0.0), None
    (params, opt_state, _), _ = jax.lax.scan(body, (params, opt_state, 0.0), (xs_, ys_))
    return params, opt_state
  plain_many = jax.jit(plain_many, donate_argnums=(0, 1))
  one_ours = train.make_train_step(model, tx, config)

  def ours_many(state, xs_, ys_):
    state, metrics = jax.lax.scan(lambda s, b: one_ours(s, *b), state, (xs_, ys_))
    return state, metrics
  ours_many = jax.jit(ours_many, donate_argnums=0)

  def run_plain_scan():
    params = model.init(rng, xs[0])["params"]
    opt_state = ref_tx.init(params)
    jax.block_until_ready(params)
    start = time.perf_counter()
    for x, y in zip(xs_stacked, ys_stacked):
      params, opt_state = plain_many(params, opt_state, x, y)
    jax.block_until_ready(params)
    return (time.perf_counter() - start) * steps / (chunks * scan)

  def run_ours_scan():
    state = train.create_train_state(config, model, tx, rng, dataset)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for x, y in zip(xs_stacked, ys_stacked):
      state, metrics = ours_many(state, x, y)
    jax.block_until_ready(metrics["loss"])
    return (time.perf_counter() - start) * steps / (chunks * scan)

  variants = {"plain": run_plain, "ours": lambda: run_ours(False),
              "ours-fixed-hp": lambda: run_ours(False, fixed_tx, fixed_step),
              "ours+monitors": lambda: run_ours(True), "plain-scan": run_plain_scan,
              "ours-scan": run_ours_scan}
  variants.update(_members_variants(config, dataset, batch, steps))
  return variants


def _members_variants(config, dataset, batch, steps):
  """The members trainer's epoch for ``--members`` members, scanned and looped; the time is
  divided by the number of members (seconds per member for ``steps`` steps)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from research import train
  from research.train import members

  k = _MEMBERS.value
  configs = []
  for i in range(k):
    member = config.copy_and_resolve_references()
    member.seed = i
    member.train.batch_size = batch
    configs.append(member)
  the_plan = members.plan(configs)
  experiment = train.build_experiment(the_plan.step_config, dataset)
  step = members.make_single_member_step(
      train.make_train_step(experiment.model, experiment.tx, the_plan.step_config), False, False)
  x_train, y_train = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
  n = len(dataset.x_train)
  rng = np.random.default_rng(0)
  perms = jnp.asarray(np.stack([np.stack([rng.permutation(n)[:batch] for _ in range(steps)])
                                for _ in range(k)]))
  zeros = jnp.zeros(k)
  out = {}
  for mode in ("scan", "loop", "each"):
    epoch = members.make_members_epoch(step, mode)

    def run(epoch=epoch):
      state = members.init_members(experiment, configs, the_plan)
      jax.block_until_ready(state)
      start = time.perf_counter()
      state, losses, _ = epoch(state, zeros, zeros, x_train, y_train, perms)
      jax.block_until_ready(losses)
      return (time.perf_counter() - start) / k

    out[f"members P={k} ({mode})"] = run
  return out


def _torch_variant(config, dataset, batch, steps):
  try:
    import torch
  except ImportError:
    return None
  torch.set_num_threads(os.cpu_count() or 1)
  n = len(dataset.x_train)
  idx = [(i * batch) % (n - batch) for i in range(steps)]
  if config.model.name == "mlp":
    layers, width = [torch.nn.Flatten()], 64
    for h in config.model.hidden_sizes:
      layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
      width = h
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, dataset.num_classes))
    to_input = lambda x: torch.from_numpy(x)
  else:
    f1, f2 = config.model.features
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, f1, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(f1, f2, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(f2 * 4, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, dataset.num_classes))
    to_input = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
  xs = [to_input(dataset.x_train[i:i + batch]) for i in idx]
  ys = [torch.from_numpy(dataset.y_train[i:i + batch].astype("int64")) for i in idx]
  opt = torch.optim.Adam(net.parameters(), lr=config.optimizer.learning_rate)
  loss_fn = torch.nn.CrossEntropyLoss()

  def run():
    start = time.perf_counter()
    for x, y in zip(xs, ys):
      opt.zero_grad(set_to_none=True)
      loss = loss_fn(net(x), y)
      loss.backward()
      opt.step()
    return time.perf_counter() - start
  return run


def main() -> int:
  import jax
  import numpy as np

  from configs import default
  from research import data
  batch, steps, every = _BATCH.value, _STEPS.value, _EVERY.value
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} devices), "
        f"{os.cpu_count()} cpus; batch {batch}, {steps} steps per pass, best of "
        f"{_REPEATS.value} (median); monitors every {every} steps")
  for name in _MODELS.value:
    config = default.get_config()
    config.model.name = name
    config.monitor.every_steps = every
    dataset = data.load_dataset(config.data)
    variants = _jax_variants(config, dataset, batch, steps, every)
    torch_run = _torch_variant(config, dataset, batch, steps)
    if torch_run is not None:
      variants["torch"] = torch_run
    for run in variants.values():  # compile / warm up
      run()
    times = {k: [] for k in variants}
    for _ in range(_REPEATS.value):
      for key, run in variants.items():
        times[key].append(run())
    median = {k: float(np.median(v)) for k, v in times.items()}
    print(f"\n{name}: {'variant':<22} {'examples/s':>12} {'us/step (min-max)':>24} {'vs plain':>9}")
    for key, seconds in median.items():
      spread = f"{1e6 * min(times[key]) / steps:.0f}-{1e6 * max(times[key]) / steps:.0f}"
      print(f"{name}: {key:<22} {steps * batch / seconds:>12,.0f} "
            f"{1e6 * seconds / steps:>9.1f} ({spread:>11}) {median['plain'] / seconds:>8.2f}x")
    print(f"{name}: ours/plain {median['ours'] / median['plain']:.3f}, ours-scan/plain-scan "
          f"{median['ours-scan'] / median['plain-scan']:.3f}, monitor cost "
          f"{median['ours+monitors'] / median['ours'] - 1:+.1%}"
          + (f", torch/ours {median['torch'] / median['ours']:.3f}" if "torch" in median else ""))


if __name__ == "__main__":
  launch.run(main)
