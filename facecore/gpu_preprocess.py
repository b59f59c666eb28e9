"""Batched preprocessing with torch, on the GPU (or the CPU in tests): decode, detector input, warps.

Images on the device are ``(H, W, 3)`` uint8 BGR tensors, like the numpy images of the CPU path.

- :func:`decode_on_device`: JPEGs that need no rotation go to nvJPEG in one batch through
  ``torchvision.io.decode_jpeg(device="cuda")`` when torchvision is installed and the device is a
  GPU; every other image (other formats, EXIF rotation, no torchvision, a JPEG nvJPEG rejects) is
  decoded on the CPU by :func:`facecore.images.decode_image` and uploaded. Limits are always checked
  from the header first, as on the CPU path.
- :func:`detector_batch`: each image shrunk by pixel-area averaging (as OpenCV's INTER_AREA) into
  one zero-padded ``(B, H, W, 3)`` uint8 batch, laid out by :class:`facecore.detect.BatchLayout`.
- :func:`warp_chips`: the five-point similarity warps of all faces of all images in one batched
  bilinear gather, images of different sizes included (a flat buffer of all images with per-face
  offsets; ``grid_sample`` would need one image size per batch). Same mapping and border (black)
  as ``cv2.warpAffine(..., INTER_LINEAR)``; OpenCV rounds its weights to 1/32, so values differ by a
  level or two.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from facecore.detect import BatchLayout
from facecore.images import ImageLimits, decode_image, open_checked

log = logging.getLogger(__name__)

EXIF_ORIENTATION = 0x0112
NVJPEG_MODES = frozenset({"RGB", "L"})


def _torchvision_decode_jpeg():
    """``torchvision.io.decode_jpeg``, or None when torchvision does not import beside this torch."""
    try:
        from torchvision.io import decode_jpeg
    except Exception:  # ImportError, or a torchvision built for another torch failing at import
        return None
    return decode_jpeg


def _gpu_decodable(data: bytes, limits: ImageLimits) -> bool:
    """Checks the limits (raising like :func:`decode_image`); True for a JPEG nvJPEG can decode upright."""
    image = open_checked(data, limits)
    if image.format != "JPEG" or image.mode not in NVJPEG_MODES:
        return False
    return image.getexif().get(EXIF_ORIENTATION, 1) == 1


def decode_on_device(images: Sequence[bytes], device, limits: ImageLimits = ImageLimits()) -> list:
    """Decode encoded images to ``(H, W, 3)`` uint8 BGR tensors on ``device``.

    Raises the same :mod:`facecore.errors` exceptions as :func:`decode_image` for the first bad image.
    """
    import torch

    device = torch.device(device)
    decoded: list = [None] * len(images)
    decode_jpeg = _torchvision_decode_jpeg() if device.type == "cuda" else None
    on_gpu = [i for i, data in enumerate(images) if _gpu_decodable(bytes(data), limits)] if decode_jpeg else []
    if on_gpu:
        from torchvision.io import ImageReadMode

        encoded = [torch.frombuffer(bytearray(images[i]), dtype=torch.uint8) for i in on_gpu]
        try:
            rgb = decode_jpeg(encoded, device=device, mode=ImageReadMode.RGB)
        except RuntimeError as exc:  # one bad JPEG fails the batch: decode those on the CPU instead
            log.debug("nvJPEG batch failed (%s); decoding on the CPU", exc)
            rgb = []
        for i, tensor in zip(on_gpu, rgb):
            decoded[i] = tensor.permute(1, 2, 0).flip(-1)
    for i, data in enumerate(images):
        if decoded[i] is None:
            decoded[i] = torch.from_numpy(decode_image(bytes(data), limits)).to(device, non_blocking=True)
    return decoded


def as_device_image(image, device):
    """A numpy BGR image (or a tensor already there) as an ``(H, W, 3)`` uint8 tensor on ``device``."""
    import torch

    if isinstance(image, torch.Tensor):
        return image.to(device)
    return torch.from_numpy(np.ascontiguousarray(image)).to(device, non_blocking=True)


def area_weights(source: int, target: int) -> np.ndarray:
    """``(target, source)`` weights of a shrink by pixel-area averaging (OpenCV's INTER_AREA): output
    pixel ``i`` averages the source interval ``[i * s, (i + 1) * s)``, ``s = source / target``, each
    source pixel weighted by how much of it lies inside."""
    scale = source / target
    starts = np.arange(target)[:, None] * scale
    pixels = np.arange(source)[None, :]
    overlap = np.clip(np.minimum(starts + scale, pixels + 1) - np.maximum(starts, pixels), 0, None)
    return (overlap / scale).astype(np.float32)


def detector_batch(images: list, layout: BatchLayout):
    """The ``(B, pad_h, pad_w, 3)`` uint8 detector input of ``images`` (device tensors) under ``layout``.

    Shrinking is two small matrix products per image (rows, then columns, by :func:`area_weights`),
    rounded to uint8 as OpenCV's resize does.
    """
    import torch

    device = images[0].device
    batch = torch.zeros((len(images), layout.pad_h, layout.pad_w, 3), device=device, dtype=torch.uint8)
    for slot, (image, (h, w)) in enumerate(zip(images, layout.sizes)):
        if (h, w) != tuple(image.shape[:2]):
            rows = torch.from_numpy(area_weights(image.shape[0], h)).to(device)
            cols = torch.from_numpy(area_weights(image.shape[1], w)).to(device)
            planar = rows @ image.permute(2, 0, 1).float() @ cols.T
            image = planar.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)
        batch[slot, :h, :w] = image
    return batch


def inverse_affines(matrices: np.ndarray) -> np.ndarray:
    """``(F, 2, 3)`` chip -> image maps of ``(F, 2, 3)`` image -> chip maps (as cv2.warpAffine uses)."""
    return np.stack([cv2.invertAffineTransform(matrix) for matrix in matrices]) if len(matrices) else \
        np.zeros((0, 2, 3))


def warp_chips(images: list, owners: Sequence[int], matrices: np.ndarray, size: int):
    """``(F, size, size, 3)`` uint8 chips: face ``f`` warped from ``images[owners[f]]`` by ``matrices[f]``.

    ``images`` are ``(H, W, 3)`` uint8 tensors on one device, of any sizes; ``matrices`` map image
    to chip coordinates, as for ``cv2.warpAffine``. Pixels mapped from outside the image are black.
    """
    import torch

    device = images[0].device
    faces = len(owners)
    if faces == 0:
        return torch.zeros((0, size, size, 3), dtype=torch.uint8, device=device)
    flat = torch.cat([image.reshape(-1) for image in images])
    heights = torch.tensor([image.shape[0] for image in images], device=device)
    widths = torch.tensor([image.shape[1] for image in images], device=device)
    starts = torch.tensor(np.concatenate([[0], np.cumsum([image.numel() for image in images])[:-1]]),
                          device=device)
    owner = torch.as_tensor(np.asarray(owners, dtype=np.int64), device=device)
    height, width, start = (t[owner].view(faces, 1, 1) for t in (heights, widths, starts))
    inverse = torch.as_tensor(inverse_affines(np.asarray(matrices, dtype=np.float64)), dtype=torch.float64,
                              device=device)
    grid = torch.arange(size, dtype=torch.float64, device=device)
    ys, xs = torch.meshgrid(grid, grid, indexing="ij")
    src_x = (inverse[:, 0, 0, None, None] * xs + inverse[:, 0, 1, None, None] * ys + inverse[:, 0, 2, None, None])
    src_y = (inverse[:, 1, 0, None, None] * xs + inverse[:, 1, 1, None, None] * ys + inverse[:, 1, 2, None, None])
    x0, y0 = torch.floor(src_x), torch.floor(src_y)
    fx, fy = (src_x - x0).float().unsqueeze(-1), (src_y - y0).float().unsqueeze(-1)
    x0, y0 = x0.long(), y0.long()
    channels = torch.arange(3, device=device)
    chip = torch.zeros((faces, size, size, 3), dtype=torch.float32, device=device)
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                           (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        x, y = x0 + dx, y0 + dy
        inside = ((x >= 0) & (x < width) & (y >= 0) & (y < height)).unsqueeze(-1)
        index = (start + (y.clamp(min=0) * width + x.clamp(min=0)) * 3).unsqueeze(-1) + channels
        index = torch.where(inside, index, torch.zeros_like(index))
        chip += weight * torch.where(inside, flat[index].float(), torch.zeros((), device=device))
    return chip.round_().clamp_(0, 255).to(torch.uint8)
