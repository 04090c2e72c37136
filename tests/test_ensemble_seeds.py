"""research.ensemble.seeds: K seeds vmapped in one program equal K separate runs."""
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.ensemble import seeds as seeds_lib


class _Net(nn.Module):

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.Dense(16)(x))
    h = nn.Dropout(0.3, deterministic=not train)(h)
    return nn.Dense(3)(h)


def _setup():
  model, tx = _Net(), optax.adam(1e-2)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(48, 5)).astype(np.float32)
  y = rng.integers(0, 3, size=48).astype(np.int32)

  def init(seed):
    key = jax.random.PRNGKey(seed)
    params = model.init(key, x[:1])["params"]
    return {"params": params, "opt_state": tx.init(params), "rng": jax.random.fold_in(key, 1)}

  def train_step(state, xb, yb):  # seed-dependent dropout through state['rng']
    rng, key = jax.random.split(state["rng"])

    def loss_fn(p):
      logits = model.apply({"params": p}, xb, train=True, rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return ({"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
             "rng": rng}, {"loss": loss})

  return x, y, init, train_step


def test_vmapped_seeds_equal_separate_runs():
  x, y, init, train_step = _setup()
  seeds, batch, epochs = [0, 1, 2], 8, 2
  steps = len(x) // batch

  def perms_for(seed_list, epoch):
    return np.stack([seeds_lib.default_epoch_permutation(s, epoch, len(x))[:steps * batch]
                     .reshape(steps, batch) for s in seed_list])

  vmapped = seeds_lib.make_vmapped_epoch(train_step, batch)
  state = seeds_lib.stack_trees([init(s) for s in seeds])
  for epoch in range(epochs):
    state, metrics = vmapped(state, jnp.asarray(x), jnp.asarray(y), jnp.asarray(perms_for(seeds, epoch)))
  assert metrics["loss"].shape == (3,)

  step = jax.jit(train_step)
  for k, seed in enumerate(seeds):  # the separate run: a plain loop over batches
    single = init(seed)
    for epoch in range(epochs):
      for idx in perms_for([seed], epoch)[0]:
        single, _ = step(single, x[idx], y[idx])
    chex.assert_trees_all_close(jax.tree.map(lambda a, k=k: a[k], state["params"]),
                                single["params"], rtol=1e-5, atol=1e-6)
  # The members really differ (different seeds -> different init, order and dropout).
  assert not np.allclose(state["params"]["Dense_0"]["kernel"][0],
                         state["params"]["Dense_0"]["kernel"][1])


def test_select_keeps_best_member_variables():
  new = {"w": jnp.arange(6.0).reshape(3, 2)}
  old = {"w": -jnp.ones((3, 2))}
  out = seeds_lib._select(jnp.asarray([True, False, True]), new, old)
  np.testing.assert_array_equal(out["w"], [[0, 1], [-1, -1], [4, 5]])
