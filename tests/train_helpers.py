"""Small configs and readers shared by the training tests."""
import json
import os
import struct

from configs import default

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(epochs: int = 3, hidden=(32,)):
  """Digits, a small MLP, a few epochs: seconds on 2 cores."""
  config = default.get_config()
  config.model.hidden_sizes = tuple(hidden)
  config.train.num_epochs = epochs
  config.optimizer.learning_rate = 1e-2
  config.monitor.every_steps = 7
  config.monitor.figures_every_epochs = 0
  return config


def read_event_file(path):
  """The events of a TensorBoard file (TFRecord framing: length, crc, payload, crc)."""
  from tensorboardX.proto import event_pb2
  events = []
  with open(path, "rb") as f:
    while header := f.read(8):
      (length,) = struct.unpack("<Q", header)
      f.read(4)
      events.append(event_pb2.Event.FromString(f.read(length)))
      f.read(4)
  return events


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
