"""The small CNN on digits (two 3x3 conv layers with 2x2 max-pooling, a dense layer), Adam.

Launch:
    python scripts/train.py --config=configs/digits_cnn.py --workdir=runs/digits_cnn

Expected result: ~98.9% validation accuracy (97% test) after 20 epochs, about 30 s on 2 CPU cores.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "cnn"
  config.model.features = (32, 64)
  config.train.num_epochs = 20
  return config
