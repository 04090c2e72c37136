"""The 1-D CNN on MNIST-1D (generated locally by the mnist1d package, 5000 signals of length 40).

Launch:
    python scripts/train.py --config=configs/mnist1d_cnn1d.py --workdir=runs/mnist1d

Expected result: ~92% validation accuracy (best around epoch 12, 20 s on 2 CPU cores); training
accuracy reaches 100%, so the verdict reports overfitting: the ablation to try next is
``--config.model.dropout=0.3`` or ``--config.loss.l2=1e-4``.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.data.name = "mnist1d"
  config.model.name = "cnn1d"
  config.model.features = (32, 64)
  config.optimizer.learning_rate = 3e-3
  config.train.num_epochs = 30
  return config
