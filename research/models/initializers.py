"""Weight initializations of the playbook's initialization experiments.

* ``xavier``: Glorot & Bengio (2010), ``w ~ N(0, 2 / (fan_in + fan_out))``;
* ``he``: He et al. (2015), ``w ~ N(0, 2 / fan_in)`` — the playbook's recommendation for ReLU
  (``w = np.random.randn(n) * sqrt(2.0 / n)``);
* ``small``: ``w ~ N(0, 0.01**2)`` — fine for small nets, vanishing activations in deep ones;
* ``unit``: ``w ~ N(0, 1)`` — exploding logits and saturated units (an initial loss far above
  ``ln(C)``);
* ``normal``: ``w ~ N(0, init_std**2)`` — any scale (``config.model.init_std``), for sweeps of the
  initialization scale (``small`` and ``unit`` are ``init_std`` 0.01 and 1);
* ``zeros`` / ``constant``: every weight 0 / ``init_std`` — the symmetric starts the playbook warns
  against (every unit of a layer computes the same thing and gets the same gradient).
Biases start at zero. The output layer's kernel is drawn from the same scheme and multiplied by
``output_scale`` (default 0.1): with He or Xavier scaling the logits of an untrained network would
have a variance near 2, an initial loss near ``ln(C) + 1`` instead of the ``ln(C)`` of a uniform
softmax that the playbook's first sanity check expects. ``unit`` stays far off either way.
"""
from __future__ import annotations

import flax.linen as nn

INITIALIZERS = ("xavier", "he", "small", "unit", "normal", "zeros", "constant")


def kernel_init(name: str, std: float = 0.01) -> nn.initializers.Initializer:
  """The kernel initializer called ``name`` (one of :data:`INITIALIZERS`); ``std`` is the scale of
  ``normal`` and the value of ``constant``.

  Raises:
    ValueError: unknown name (lists the choices).
  """
  if name == "xavier":
    return nn.initializers.variance_scaling(1.0, "fan_avg", "normal")
  if name == "he":
    return nn.initializers.variance_scaling(2.0, "fan_in", "normal")
  if name == "small":
    return nn.initializers.normal(0.01)
  if name == "unit":
    return nn.initializers.normal(1.0)
  if name == "normal":
    return nn.initializers.normal(float(std))
  if name == "zeros":
    return nn.initializers.zeros
  if name == "constant":
    return nn.initializers.constant(float(std))
  raise ValueError(f"config.model.init={name!r} is unknown; choose one of "
                   f"{', '.join(INITIALIZERS)}.")


def scaled(init: nn.initializers.Initializer, scale: float) -> nn.initializers.Initializer:
  """``init`` multiplied by ``scale`` (used for the output layer)."""
  def scaled_init(key, shape, dtype=None):
    return scale * init(key, shape, dtype) if dtype is not None else scale * init(key, shape)
  return scaled_init
