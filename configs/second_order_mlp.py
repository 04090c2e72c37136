"""Second-order vs first-order rules on digits: a small tanh MLP (64-32-10), full batch.

Launch:
    python3 scripts/second_order.py --config=configs/second_order_mlp.py \
        --workdir=/tmp/second_order_mlp

Expected result (2 shared CPU cores, float32, ~1 minute): see WORKSPACE.md (second-order
section) for the measured numbers. Dense Newton is left out (2,410 parameters would fit, but
each step costs 2,410 Hessian-vector products); add it with
--config.second_order.methods=nesterov,adam,lbfgs,hessian_free,newton.
Outputs: <workdir>/loss_vs_time.png, loss_vs_evaluations.png, second_order.json.
"""
import ml_collections

from configs import second_order_softmax


def get_config() -> ml_collections.ConfigDict:
  config = second_order_softmax.get_config()
  config.model.hidden_sizes = (32,)
  config.model.activation = "tanh"      # smooth: the Hessian is defined everywhere
  config.loss.l2 = 1e-4
  so = config.second_order
  so.methods = "nesterov,adam,lbfgs,hessian_free"
  so.nesterov.learning_rate = 0.2
  so.adam.learning_rate = 0.01
  so.hessian_free.damping = 1.0         # non-convex: start with a short, gradient-like step
  return config
