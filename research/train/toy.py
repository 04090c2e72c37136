"""Trajectories of an update rule on a small function of a 2-D point (the playbook's toy surfaces:
the elongated bowl, the saddle), each update the engine's :func:`research.train.make_step`."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research.train.update import make_step


def toy_paths(tx, loss_fn, start: Any, hyperparams: Mapping[str, Sequence[float]],
              steps: int) -> np.ndarray:
  """Positions ``(P, steps + 1, 2)`` of rule ``tx`` on a 2-D function from ``start`` (``(2,)``
  for every member, or ``(P, 2)``), one member per set of ``hyperparams`` values (``{name: (P,)
  values}``, written into the optimizer state: ``research.optim.init_population``), each update
  ``research.train.make_step`` (the engine's update; the Nesterov look-ahead point included)."""
  from research import optim
  size = len(next(iter(hyperparams.values())))
  start = jnp.broadcast_to(jnp.asarray(start, jnp.float32), (size, 2))
  states = optim.init_population(tx, start, {k: jnp.asarray(v, jnp.float32)
                                             for k, v in hyperparams.items()})
  step = jax.vmap(make_step(tx, loss_fn, full_batch=False))

  def body(carry, _):
    params, state = carry
    params, state, _, _ = step(params, state)
    return (params, state), params

  _, path = jax.jit(lambda p, s: jax.lax.scan(body, (p, s), length=steps))(start, states)
  return np.concatenate([np.asarray(start)[:, None], np.swapaxes(np.asarray(path), 0, 1)], axis=1)
