"""TensorBoard event files, encoded here: scalars, histograms, text and the hparams plugin.

Why not tensorboardX: importing ANY of its modules runs ``tensorboardX/__init__.py``, which imports
``tensorboardX.writer`` (``import torch`` whenever torch is installed: +2.2 s) and
``record_writer`` (``import boto3``: +0.2 s) in every training process. The few messages a
training run writes are small, so they are encoded here with the protobuf wire format (varints,
fixed 32/64-bit numbers, length-delimited fields) and framed as TFRecords. The bytes parse with
TensorBoard's and tensorboardX's own ``Event`` protos, and TensorBoard's ``EventAccumulator`` reads
the files back (tests/test_monitor_tensorboard.py).

Messages (field numbers from tensorboard/compat/proto/{event,summary,tensor}.proto and
tensorboard/plugins/hparams/{api,plugin_data}.proto)::

    Event           1 wall_time double, 2 step int64, 3 file_version string, 5 summary Summary
    Summary         1 value repeated Value
    Value           1 tag, 2 simple_value float, 5 histo HistogramProto, 8 tensor TensorProto,
                    9 metadata SummaryMetadata
    HistogramProto  1 min, 2 max, 3 num, 4 sum, 5 sum_squares (double), 6 bucket_limit,
                    7 bucket (packed double)

proto3 leaves a plain scalar field out when it holds its default (0, "", False); a member of a
``oneof`` (``simple_value``, ``summary``, the hparams ``Value`` kinds) is always written.
"""
from __future__ import annotations

import functools
import itertools
import os
import socket
import struct
import threading
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
  if 0 <= value < 0x80:
    return _SMALL[value]
  value &= (1 << 64) - 1  # negative int64s are ten bytes of two's complement
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


_SMALL = [bytes((i,)) for i in range(0x80)]


def _key(field: int, wire_type: int) -> bytes:
  return _varint((field << 3) | wire_type)


def _bytes_field(field: int, payload: bytes, always: bool = False) -> bytes:
  if not payload and not always:
    return b""
  return _key(field, _BYTES) + _varint(len(payload)) + payload


def _string_field(field: int, text: str, always: bool = False) -> bytes:
  return _bytes_field(field, text.encode("utf-8"), always)


def _double_field(field: int, value: float, always: bool = False) -> bytes:
  packed = struct.pack("<d", value)
  if packed == bytes(8) and not always:  # +0.0 is the default; -0.0 is not
    return b""
  return _key(field, _FIXED64) + packed


def _float_field(field: int, value: float) -> bytes:
  return _key(field, _FIXED32) + struct.pack("<f", value)


def _int_field(field: int, value: int, always: bool = False) -> bytes:
  if value == 0 and not always:
    return b""
  return _key(field, _VARINT) + _varint(int(value))


def _packed_doubles(field: int, values: Any) -> bytes:
  payload = np.asarray(values, dtype="<f8").tobytes()
  return _bytes_field(field, payload)


# -- Summary.Value ---------------------------------------------------------------------------------


def scalar_value(tag: str, value: float) -> bytes:
  """``Summary.Value(tag=tag, simple_value=value)`` (a float32, as TensorBoard keeps it)."""
  return _string_field(1, tag) + _float_field(2, value)


def histogram_value(tag: str, counts: Any, edges: Any) -> bytes:
  """``Summary.Value(tag, histo=HistogramProto)`` from bin ``counts`` and their ``edges``.

  ``num = sum(counts)``, ``sum`` and ``sum_squares`` from the bin centers (what
  ``tensorboardX.summary.histogram_raw`` is given by its callers), ``bucket_limit`` = the right
  edges: TensorBoard reads bucket ``i`` as ``(bucket_limit[i-1], bucket_limit[i]]``.
  """
  counts = np.asarray(counts, dtype=np.float64).reshape(-1)
  edges = np.asarray(edges, dtype=np.float64).reshape(-1)
  centers = 0.5 * (edges[:-1] + edges[1:])
  histo = (_double_field(1, float(edges[0])) + _double_field(2, float(edges[-1]))
           + _double_field(3, float(counts.sum())) + _double_field(4, float(counts @ centers))
           + _double_field(5, float(counts @ (centers * centers)))
           + _packed_doubles(6, edges[1:]) + _packed_doubles(7, counts))
  return _string_field(1, tag) + _bytes_field(5, histo, always=True)


def _plugin_metadata(plugin_name: str, content: bytes) -> bytes:
  """``SummaryMetadata(plugin_data=PluginData(plugin_name, content))``."""
  return _bytes_field(1, _string_field(1, plugin_name) + _bytes_field(2, content), always=True)


def text_value(tag: str, text: str) -> bytes:
  """A text-plugin value: ``TensorProto(dtype=DT_STRING, shape [1], string_val=[text])``, rendered
  as markdown by TensorBoard's Text tab."""
  shape = _bytes_field(2, _int_field(1, 1), always=True)  # TensorShapeProto(dim=[Dim(size=1)])
  tensor = (_int_field(1, 7)  # DT_STRING
            + _bytes_field(2, shape, always=True) + _bytes_field(8, text.encode("utf-8"),
                                                                 always=True))
  return (_string_field(1, tag) + _bytes_field(8, tensor, always=True)
          + _bytes_field(9, _plugin_metadata("text", b""), always=True))


# -- hparams plugin --------------------------------------------------------------------------------

HPARAMS_EXPERIMENT_TAG = "_hparams_/experiment"
HPARAMS_SESSION_START_TAG = "_hparams_/session_start_info"
HPARAMS_SESSION_END_TAG = "_hparams_/session_end_info"
# tensorboard.plugins.hparams.api_pb2: DataType and Status enums.
_DATA_TYPE = {str: 1, bool: 2, float: 3}
STATUS = {"unknown": 0, "success": 1, "failure": 2, "running": 3}


def hparam_value(value: Any) -> tuple[Any, int]:
  """``(value, DataType)`` TensorBoard can show: str, bool or float; sequences become strings."""
  if isinstance(value, bool):
    return value, _DATA_TYPE[bool]
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return float(value), _DATA_TYPE[float]
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value), _DATA_TYPE[str]
  return str(value), _DATA_TYPE[str]


def _struct_value(value: Any) -> bytes:
  """``google.protobuf.Value``: 2 number_value, 3 string_value, 4 bool_value (a oneof)."""
  if isinstance(value, bool):
    return _int_field(4, int(value), always=True)
  if isinstance(value, float):
    return _double_field(2, value, always=True)
  return _string_field(3, value, always=True)


def _hparams_plugin_value(tag: str, data_field: int, data: bytes) -> bytes:
  """A ``Summary.Value`` carrying ``HParamsPluginData(version=0, <data_field>=data)``."""
  content = _bytes_field(data_field, data, always=True)
  return _string_field(1, tag) + _bytes_field(9, _plugin_metadata("hparams", content), always=True)


def hparams_values(hparams: Mapping[str, Any], metric_tags: Iterable[str],
                   start_time: float = 0.0, status: str = "success",
                   end_time: float = 0.0) -> list[bytes]:
  """The three hparams-plugin values of one session (one run directory), as tensorboardX's
  ``add_hparams`` writes them: the experiment (hyperparameter names and types, metric tags), the
  session start (hyperparameter values) and the session end (``status``: success | failure |
  running | unknown). ``None`` values are left out. The metrics themselves are ordinary scalars
  with the tags given, written in the same run directory."""
  if status not in STATUS:
    raise ValueError(f"status={status!r} is not known; known: {list(STATUS)}")
  infos, entries = b"", b""
  for name, raw in hparams.items():
    if raw is None:
      continue
    value, data_type = hparam_value(raw)
    infos += _bytes_field(4, _string_field(1, name) + _int_field(4, data_type), always=True)
    entry = _string_field(1, name) + _bytes_field(2, _struct_value(value), always=True)
    entries += _bytes_field(1, entry, always=True)  # map<string, Value> entry
  for tag in metric_tags:
    metric_name = _bytes_field(1, _string_field(2, tag), always=True)  # MetricName(tag=tag)
    infos += _bytes_field(5, metric_name, always=True)
  start = entries + _double_field(5, start_time)
  end = _int_field(1, STATUS[status]) + _double_field(2, end_time)
  return [_hparams_plugin_value(HPARAMS_EXPERIMENT_TAG, 2, infos),
          _hparams_plugin_value(HPARAMS_SESSION_START_TAG, 3, start),
          _hparams_plugin_value(HPARAMS_SESSION_END_TAG, 4, end)]


# -- Event and the file ----------------------------------------------------------------------------


def event(step: int, values: Sequence[bytes], wall_time: float | None = None) -> bytes:
  """``Event(wall_time, step, summary=Summary(value=values))`` serialized."""
  summary = b"".join(_bytes_field(1, v, always=True) for v in values)
  wall_time = time.time() if wall_time is None else wall_time
  return _double_field(1, wall_time) + _int_field(2, step) + _bytes_field(5, summary, always=True)


@functools.lru_cache(maxsize=1)
def _crc32c():
  os.environ.setdefault("CRC32C_SW_MODE", "auto")  # software CRC where the CPU has no SSE4.2
  import crc32c  # pylint: disable=g-import-not-at-top
  return crc32c.crc32c


def _masked_crc(data: bytes) -> int:
  """TFRecord's masked CRC32C: ``((crc >> 15) | (crc << 17)) + 0xa282ead8`` (mod 2**32)."""
  crc = _crc32c()(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tf_record(data: bytes) -> bytes:
  """One TFRecord: length (uint64), its masked CRC, the data, the data's masked CRC (all little
  endian)."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", _masked_crc(length)) + data
          + struct.pack("<I", _masked_crc(data)))


_FILE_NUMBERS = itertools.count()


class EventFileWriter:
  """Writes events to a new ``<directory>/events.out.tfevents.<time>.<host>.<pid>.<n>``: a resumed
  run adds a file next to the old ones (never appends after a record a kill may have cut short),
  and TensorBoard reads them in name order. The first record is
  ``Event(file_version='brain.Event:2')``. Thread-safe."""

  def __init__(self, directory: str):
    os.makedirs(directory, exist_ok=True)
    now = time.time()
    name = (f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}."
            f"{next(_FILE_NUMBERS):03d}")
    self.path = os.path.join(directory, name)
    self._file = open(self.path, "xb")
    self._lock = threading.Lock()
    self.write(_double_field(1, now) + _string_field(3, "brain.Event:2", always=True))

  def write(self, serialized_event: bytes) -> None:
    record = tf_record(serialized_event)
    with self._lock:
      self._file.write(record)

  def flush(self) -> None:
    with self._lock:
      self._file.flush()

  def close(self) -> None:
    with self._lock:
      if not self._file.closed:
        self._file.close()
