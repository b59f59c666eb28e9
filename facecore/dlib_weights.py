"""Read the weights of dlib's face recognition ResNet from its serialized ``.dat`` file (numpy only).

dlib serializes a network layer by layer from the input up: each layer's name as a length-prefixed
string (``con_4``, ``affine_``, ``fc_2``...), then its fields. Integers are written by dlib's
``pack_int`` (one byte: byte count, high bit = negative; then that many little-endian bytes), and a
tensor as ``version=2, num_samples, k, nr, nc`` followed by little-endian float32 values. Only the
layers with parameters are read here, in file order:

- ``con_``: ``params`` (filters ``(out, in, nr, nc)`` then, when present, ``out`` biases), then
  ``num_filters, nr, nc, stride_y, stride_x, padding_y, padding_x``;
- ``affine_`` (batch normalisation frozen at inference): ``params`` = ``gamma`` then ``beta``;
- ``fc_``: ``num_outputs, num_inputs``, then ``params`` of shape ``(num_inputs, num_outputs)``.

The structure between them (tags, skips, pooling, additions) carries no parameters; the network's
shape is fixed by :mod:`facecore.dlib_resnet`, which checks every layer read here against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecore.errors import ModelError

_LAYER_NAME = re.compile(rb"\x01[\x04-\x08](con_\d|affine_|fc_\d?)")


@dataclass(frozen=True)
class ConvWeights:
    filters: np.ndarray  # (out, in, nr, nc) float32
    bias: np.ndarray | None
    stride: int
    padding: int


@dataclass(frozen=True)
class AffineWeights:
    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class DlibNetWeights:
    """Parameter layers of the network in file order (input first) and the final projection."""

    layers: list[ConvWeights | AffineWeights]
    projection: np.ndarray  # (num_inputs, num_outputs): embedding = features @ projection


class DlibReader:
    """dlib's serialized integers and tensors, read from ``offset`` on."""

    def __init__(self, data: bytes, offset: int):
        self.data = data
        self.offset = offset

    def packed_int(self) -> int:
        head = self.data[self.offset]
        size, negative = head & 0x0F, bool(head & 0x80)
        if size > 8:
            raise ModelError(f"corrupt dlib integer at byte {self.offset}")
        value = int.from_bytes(self.data[self.offset + 1:self.offset + 1 + size], "little")
        self.offset += 1 + size
        return -value if negative else value

    def tensor(self) -> np.ndarray:
        version = self.packed_int()
        if version != 2:
            raise ModelError(f"unsupported dlib tensor version {version} at byte {self.offset}")
        shape = [self.packed_int() for _ in range(4)]
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.offset)
        self.offset += 4 * count
        return values.astype(np.float32)


def _conv(reader: DlibReader, in_channels: int) -> ConvWeights:
    params = reader.tensor()
    out, rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.packed_int() for _ in range(7))
    if rows != cols or stride_y != stride_x or pad_y != pad_x:
        raise ModelError("only square convolutions are supported")
    weights = out * in_channels * rows * cols
    if params.size not in (weights, weights + out):
        raise ModelError(f"convolution of {params.size} parameters is not {out}x{in_channels}x{rows}x{cols}")
    bias = params[weights:] if params.size > weights else None
    return ConvWeights(params[:weights].reshape(out, in_channels, rows, cols), bias, stride_y, pad_y)


def read_dlib_net(path: Path | str, in_channels: int = 3) -> DlibNetWeights:
    """Every convolution, affine and the final fully connected layer of the network in ``path``."""
    data = Path(path).read_bytes()
    layers: list[ConvWeights | AffineWeights] = []
    projection = None
    channels = in_channels
    for match in _LAYER_NAME.finditer(data):
        name = match.group(1)
        reader = DlibReader(data, match.end())
        if name.startswith(b"con_"):
            conv = _conv(reader, channels)
            channels = conv.filters.shape[0]
            layers.append(conv)
        elif name == b"affine_":
            params = reader.tensor()
            half = params.size // 2
            layers.append(AffineWeights(params[:half], params[half:]))
        else:
            outputs, inputs = reader.packed_int(), reader.packed_int()
            params = reader.tensor()
            if params.size != outputs * inputs:
                raise ModelError(f"fc layer of {params.size} parameters is not {inputs}x{outputs}")
            projection = params.reshape(inputs, outputs)
    if projection is None or not layers:
        raise ModelError(f"{path}: no dlib network layers found")
    return DlibNetWeights(layers, projection)
