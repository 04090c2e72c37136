"""The jitted steps: pure functions of pytrees (so they can be jitted, sharded and vmapped).

``train_step(state, x, y) -> (state, metrics)``:

    g        = grad_params loss(gradient_point(params), x, y)     # Nesterov: look-ahead point
    delta, s = tx.update(g, opt_state, params)
    params   = params + delta
    averages = update_averages(averages, params, step + 1)       # EMA / Polyak, when on

The monitored variant (``monitored=True``) also returns the update/weight ratio of every leaf
(``||delta|| / ||params||``) and the per-layer activation and gradient statistics; the training
loop calls it only every ``config.monitor.every_steps`` steps, so its cost is sampled.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from research import monitor, optim
from research.averaging import update_averages
from research.train.losses import make_loss_fn
from research.train.state import TrainState


def make_train_step(model, tx: optax.GradientTransformation, config: Any,
                    monitored: bool = False) -> Callable:
  """``train_step(state, x, y) -> (state, metrics)`` for ``model`` and update rule ``tx``.

  ``metrics = {'loss', 'data_loss', 'accuracy'}`` of the batch (before the update); with
  ``monitored``, also ``'update_ratio'`` (per leaf) and ``'layers'`` (``monitor.layer_statistics``).
  """
  loss_fn = make_loss_fn(model, float(config.loss.l2), capture=monitored)
  activation = config.model.activation
  bins = int(config.monitor.histogram_bins)

  def train_step(state: TrainState, x: jax.Array, y: jax.Array):
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    point = optim.gradient_point(state.params, state.opt_state)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        point, state.batch_stats, x, y, dropout_rng, True)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    averages = state.averages
    if averages is not None:
      averages = update_averages(averages, params, step)
    metrics = {"loss": loss, "data_loss": aux["data_loss"],
               "accuracy": jnp.mean(jnp.argmax(aux["logits"], -1) == y)}
    if monitored:
      metrics["update_ratio"] = monitor.update_ratios(updates, state.params)
      metrics["layers"] = monitor.layer_statistics(aux["intermediates"], grads, activation, bins)
    new_state = state.replace(step=step, params=params, batch_stats=aux["batch_stats"],
                              opt_state=opt_state, averages=averages)
    return new_state, metrics

  return train_step


def make_eval_step(model) -> Callable:
  """``eval_step(params, batch_stats, x, y) -> {'loss', 'accuracy'}``: batch means, test mode
  (dropout off, batch norm on its running statistics)."""
  loss_fn = make_loss_fn(model, 0.0)

  def eval_step(params, batch_stats, x, y):
    _, aux = loss_fn(params, batch_stats, x, y, jax.random.PRNGKey(0), False)
    return {"loss": aux["data_loss"],
            "accuracy": jnp.mean((jnp.argmax(aux["logits"], -1) == y).astype(jnp.float32))}

  return eval_step
