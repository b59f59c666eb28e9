"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in PyTorch, and its ONNX export.

The network, as dlib's ``dnn_face_recognition_ex.cpp`` declares it: a 7x7/2 convolution (32), 3x3/2
max pooling, then residual blocks of two 3x3 convolutions with frozen batch normalisation
(``affine``): 3 of 32, 4 of 64, 3 of 128, 3 of 256 and 1 of 256 channels, the first block of each
later stage halving the resolution (3x3/2 convolution; the shortcut a 2x2/2 average pooling);
global average pooling and a 256 -> 128 projection without bias. dlib's conventions kept exactly:
a convolution or pooling with stride > 1 has no padding, stride 1 pads by half the kernel; the
residual addition (``add_prev``) of tensors of different sizes zero-pads the smaller one at the end
(more channels, or one more row and column where a stride-2 convolution and the 2x2 pooling round
differently); the input is RGB in 0..255, minus dlib's channel means, divided by 256.

torch is needed only to build the graph: :func:`export_onnx` writes it once (see
:mod:`facecore.model_builds`), and the platform's inference backends run the ONNX file.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from facecore.dlib_weights import AffineWeights, ConvWeights, DlibNetWeights
from facecore.errors import ModelError

INPUT_SIZE = 150
RGB_MEANS = (122.782, 117.001, 104.298)
INPUT_SCALE = 256.0
# (channels, blocks, first block halves the resolution) per stage, input side first
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
ONNX_OPSET = 17


class _ConvAffine(nn.Module):
    """A dlib ``con`` followed by its ``affine`` layer (a per-channel scale and shift)."""

    def __init__(self, conv: ConvWeights, affine: AffineWeights):
        super().__init__()
        out, _, kernel, _ = conv.filters.shape
        if affine.gamma.size != out:
            raise ModelError(f"affine of {affine.gamma.size} channels after a {out}-channel convolution")
        self.stride, self.padding = conv.stride, conv.padding
        self.weight = nn.Parameter(torch.from_numpy(conv.filters.copy()), requires_grad=False)
        bias = conv.bias if conv.bias is not None else np.zeros(out, np.float32)
        self.bias = nn.Parameter(torch.from_numpy(bias.copy()), requires_grad=False)
        self.gamma = nn.Parameter(torch.from_numpy(affine.gamma.reshape(1, -1, 1, 1).copy()), requires_grad=False)
        self.beta = nn.Parameter(torch.from_numpy(affine.beta.reshape(1, -1, 1, 1).copy()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)
        return x * self.gamma + self.beta


Pads = tuple[int, ...]


def _add_prev_pads(a: torch.Size, b: torch.Size) -> tuple[Pads, Pads]:
    """dlib's ``add_prev`` sums over the larger shape, the smaller tensor zero-padded at the end:
    the ``F.pad`` amounts (last dimension first) of two NCHW shapes."""
    target = [max(x, y) for x, y in zip(a[1:], b[1:])]

    def pads(shape: torch.Size) -> Pads:
        return (0, target[2] - shape[3], 0, target[1] - shape[2], 0, target[0] - shape[1])

    return pads(a), pads(b)


class _Residual(nn.Module):
    """Two conv+affine layers and the shortcut (a 2x2/2 average pooling where the block halves the
    resolution). The padding of the addition depends only on the input size, fixed at 150: it is
    found on the first call (:class:`DlibFaceResNet` makes one) and kept as constants, so the
    exported graph has no shape arithmetic."""

    def __init__(self, first: _ConvAffine, second: _ConvAffine, down: bool):
        super().__init__()
        self.first, self.second, self.down = first, second, down
        self.pads: tuple[Pads, Pads] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.second(F.relu(self.first(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        if self.pads is None:
            self.pads = _add_prev_pads(branch.shape, shortcut.shape)
        branch_pads, shortcut_pads = self.pads
        if any(branch_pads):
            branch = F.pad(branch, branch_pads)
        if any(shortcut_pads):
            shortcut = F.pad(shortcut, shortcut_pads)
        return F.relu(branch + shortcut)


class DlibFaceResNet(nn.Module):
    """Float ``(N, 3, 150, 150)`` RGB chips in 0..255 -> ``(N, 128)`` descriptors, as dlib computes them."""

    def __init__(self, weights: DlibNetWeights):
        super().__init__()
        layers = list(weights.layers)
        expected = 2 * (1 + 2 * sum(blocks for _, blocks, _ in STAGES))
        if len(layers) != expected:
            raise ModelError(f"expected {expected} convolution and affine layers, read {len(layers)}")
        pairs = [_ConvAffine(layers[i], layers[i + 1]) for i in range(0, len(layers), 2)]
        self.stem = pairs[0]
        blocks, index = [], 1
        for channels, count, halves in STAGES:
            for block in range(count):
                first, second = pairs[index], pairs[index + 1]
                down = halves and block == 0
                if first.weight.shape[0] != channels or first.stride != (2 if down else 1):
                    raise ModelError(f"layer {index} does not match dlib's face ResNet")
                blocks.append(_Residual(first, second, down))
                index += 2
        self.blocks = nn.Sequential(*blocks)
        self.register_buffer("means", torch.tensor(RGB_MEANS, dtype=torch.float32).reshape(1, 3, 1, 1))
        self.projection = nn.Parameter(torch.from_numpy(weights.projection.copy()), requires_grad=False)
        with torch.no_grad():
            self(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE))  # fixes the residual additions' padding

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = (rgb - self.means) / INPUT_SCALE
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x)
        return x.mean(dim=(2, 3)) @ self.projection


def export_onnx(weights: DlibNetWeights) -> onnx.ModelProto:
    """The network as ONNX: input ``rgb`` ``(batch, 3, 150, 150)`` float RGB, output ``descriptor``."""
    model = DlibFaceResNet(weights).eval()
    example = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer and exporter warn of shapes taken as constants: they are (the input is always 150x150)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(model, (example,), buffer, input_names=["rgb"], output_names=["descriptor"],
                          dynamic_axes={"rgb": {0: "batch"}, "descriptor": {0: "batch"}},
                          opset_version=ONNX_OPSET, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())
