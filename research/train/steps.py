"""The jitted steps: pure functions of pytrees (so they can be jitted, sharded and vmapped).

``train_step(state, x, y, *extra) -> (state, metrics)`` is one ``research.train.apply_update`` of
the configured rule on the training loss::

    g        = grad_params loss(gradient_point(params), x, y)     # Nesterov: look-ahead point
    delta, s = tx.update(g, opt_state, params, value_fn=loss)
    params   = params + delta
    averages = update_averages(averages, params, step + 1)       # EMA / Polyak, when on

The dropout key of step ``t`` is ``fold_in(state.rng, t)``. The monitored variant
(``monitored=True``) also returns the update/weight ratio of every leaf (``||delta|| /
||params||``) and the per-layer activation and gradient statistics; the training loop calls it only
every ``config.monitor.every_steps`` steps, so its cost is sampled.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from research import monitor
from research.averaging import update_averages
from research.train.losses import cross_entropy, make_loss_fn
from research.train.state import TrainState
from research.train.update import apply_update


def make_update_step(loss_fn: Callable, tx: optax.GradientTransformation,
                     statistics: Callable[[Any, Any], dict] | None = None) -> Callable:
  """``train_step(state, x, y, *extra) -> (state, metrics)``: one ``apply_update`` of ``tx`` on
  ``loss_fn(params, batch_stats, x, y, rng, train, *extra) -> (loss, aux)`` (a
  :func:`research.train.make_loss_fn`), with the dropout key ``fold_in(state.rng, state.step)``.

  ``statistics(update, state)`` adds monitoring metrics (the monitored step).
  """

  def train_step(state: TrainState, x: jax.Array, y: jax.Array, *extra: jax.Array):
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    update = apply_update(
        tx, lambda params: loss_fn(params, state.batch_stats, x, y, dropout_rng, True, *extra),
        state.params, state.opt_state, need_updates=statistics is not None)
    step = state.step + 1
    averages = state.averages
    if averages is not None:
      averages = update_averages(averages, update.params, step)
    aux = update.aux
    metrics = {"loss": update.loss, "data_loss": aux["data_loss"],
               "accuracy": jnp.mean(jnp.argmax(aux["logits"], -1) == y)}
    if statistics is not None:
      metrics.update(statistics(update, state))
    new_state = state.replace(step=step, params=update.params, batch_stats=aux["batch_stats"],
                              opt_state=update.opt_state, averages=averages)
    return new_state, metrics

  return train_step


def make_train_step(model, tx: optax.GradientTransformation, config: Any,
                    monitored: bool = False,
                    objective: Callable[..., jax.Array] = cross_entropy) -> Callable:
  """``train_step(state, x, y, *extra) -> (state, metrics)`` for ``model`` and rule ``tx``.

  ``metrics = {'loss', 'data_loss', 'accuracy'}`` of the batch (before the update); with
  ``monitored``, also ``'update_ratio'`` (per leaf) and ``'layers'`` (``monitor.layer_statistics``).
  ``objective(logits, y, *extra)`` is the data loss (default: mean cross-entropy).
  """
  loss_fn = make_loss_fn(model, float(config.loss.l2), capture=monitored, objective=objective)
  statistics = None
  if monitored:
    activation, bins = config.model.activation, int(config.monitor.histogram_bins)

    def statistics(update, state):
      return {"update_ratio": monitor.update_ratios(update.updates, state.params),
              "layers": monitor.layer_statistics(update.aux["intermediates"], update.grads,
                                                 activation, bins)}

  return make_update_step(loss_fn, tx, statistics)


def make_eval_step(model) -> Callable:
  """``eval_step(params, batch_stats, x, y) -> {'loss', 'accuracy'}``: batch means, test mode
  (dropout off, batch norm on its running statistics)."""
  loss_fn = make_loss_fn(model, 0.0)

  def eval_step(params, batch_stats, x, y):
    _, aux = loss_fn(params, batch_stats, x, y, jax.random.PRNGKey(0), False)
    return {"loss": aux["data_loss"],
            "accuracy": jnp.mean((jnp.argmax(aux["logits"], -1) == y).astype(jnp.float32))}

  return eval_step
