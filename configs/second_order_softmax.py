"""Second-order vs first-order rules on digits: softmax regression, full batch.

Launch:
    python3 scripts/second_order.py --config=configs/second_order_softmax.py \
        --workdir=/tmp/second_order_softmax

Expected result (2 shared CPU cores, float32, ~1 minute): L-BFGS reaches the lowest training
loss, in the fewest gradient-equivalent evaluations and the least wall time; dense Newton
(650 parameters: a 650 x 650 Hessian per step) converges in a handful of steps but each step
costs 650 Hessian-vector products; Hessian-free Newton sits between them; SGD + Nesterov and Adam
(learning rates picked by a small sweep) are still well above the minimum when the time budget
ends. Validation accuracy ~96-97% for all that converge (the problem is convex; L2 = 1e-3).
Outputs: <workdir>/loss_vs_time.png, loss_vs_evaluations.png, second_order.json.
"""
import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model.hidden_sizes = ()        # no hidden layer: logits = x W + b (softmax regression)
  config.loss.l2 = 1e-3                 # strictly convex: one minimum every method should reach
  config.model.init = "xavier"
  config.model.output_scale = 1.0      # the output layer is the only layer: no down-scaling

  so = config.second_order = ml_collections.ConfigDict()
  so.methods = "nesterov,adam,lbfgs,hessian_free,newton"  # comma-separated, drawn in this order
  # Every method runs for the same update time (compilation excluded); max_steps only caps it.
  so.time_budget_s = 5.0
  so.float64 = False
  so.nesterov = ml_collections.ConfigDict(dict(learning_rate=0.5, mu=0.9, max_steps=20000))
  so.adam = ml_collections.ConfigDict(dict(learning_rate=0.05, max_steps=20000))
  so.lbfgs = ml_collections.ConfigDict(dict(memory_size=10, max_steps=5000))
  so.hessian_free = ml_collections.ConfigDict(
      dict(damping=1e-2, cg_max_iters=50, cg_tol=1e-3, max_steps=2000))
  so.newton = ml_collections.ConfigDict(dict(damping=0.1, max_steps=200))
  return config
