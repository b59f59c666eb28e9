"""Safe decoding of uploaded images into 8-bit BGR arrays.

Size and pixel-count limits are checked before any pixel is decoded (the pixel count comes from the
header), so a small file that declares a huge image cannot exhaust memory. Every failure raises a
typed :mod:`facecore.errors` exception with a message a user can act on.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facecore.errors import ImageTooLarge, InvalidImage, TooManyPixels, UnsupportedFormat

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF", "MPO"})
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000
EXIF_ORIENTATION = 0x0112
JPEG_END = b"\xff\xd9"
REDUCED_JPEG_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}

# We enforce our own pixel limit before decoding; Pillow's warning/error would fire on a different one.
Image.MAX_IMAGE_PIXELS = None


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to every decoded upload."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Normalise any Pillow mode (grey, palette, RGBA, 16-bit, CMYK, ...) to 8-bit RGB."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


class ReducedImage(np.ndarray):
    """A JPEG decoded at ``1 / reduction`` of its size (``full_size``: its ``(height, width)``).

    Pixel coordinates in it times ``reduction`` are coordinates in the full image. Its views report
    ``reduction`` 1 (a crop has other coordinates): only the decoded image itself carries it.
    """

    reduction: int = 1
    full_size: tuple[int, int] = (0, 0)

    @classmethod
    def wrap(cls, array: np.ndarray, reduction: int, full_size: tuple[int, int]) -> "ReducedImage":
        image = array.view(cls)
        image.reduction, image.full_size = reduction, full_size
        return image


def reduction_of(image: np.ndarray) -> int:
    """1, or the reduction of a :class:`ReducedImage`."""
    return getattr(image, "reduction", 1)


def full_size(image: np.ndarray) -> tuple[int, int]:
    """``(height, width)`` of the full image ``image`` shows (itself, unless reduced)."""
    return image.full_size if reduction_of(image) > 1 else image.shape[:2]


def jpeg_reduction(width: int, height: int, min_side: int) -> int:
    """The largest JPEG decoding scale (1, 2, 4 or 8) that keeps the longer side at least ``min_side``."""
    longest = max(width, height)
    return max([1] + [factor for factor in REDUCED_JPEG_FLAGS if min_side and longest // factor >= min_side])


def open_checked(data: bytes, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """Open image bytes lazily (header only) and check format, size and pixel-count limits.

    Raises :class:`InvalidImage`, :class:`UnsupportedFormat`, :class:`ImageTooLarge` or
    :class:`TooManyPixels`; no pixel is decoded yet.
    """
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes; the limit is {limits.max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImage("the data is not an image in a known format "
                           "(JPEG, PNG, BMP, WebP, TIFF or GIF expected)") from None
    except Exception as exc:  # Pillow raises assorted errors on corrupt headers
        raise InvalidImage(f"the image header is corrupt: {exc}") from None
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedFormat(f"image format {image.format} is not supported; "
                                "send JPEG, PNG, BMP, WebP, TIFF or GIF")
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImage(f"the image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise TooManyPixels(f"the image is {width}x{height} = {width * height} pixels; "
                            f"the limit is {limits.max_pixels} pixels")
    return image


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), min_side: int = 0) -> np.ndarray:
    """Decode image bytes to an ``(H, W, 3)`` uint8 BGR array, upright per its EXIF orientation.

    Accepts JPEG, PNG, BMP, WebP, TIFF and GIF (first frame). Raises :class:`InvalidImage`,
    :class:`UnsupportedFormat`, :class:`ImageTooLarge` or :class:`TooManyPixels`. With ``min_side``, a
    plain JPEG whose longer side is at least twice that is decoded at 1/2, 1/4 or 1/8 of its size
    (JPEG's DCT scaling, far cheaper than a full decode), its longer side staying at least
    ``min_side``: a :class:`ReducedImage`.
    """
    image = open_checked(data, limits)
    width, height = image.size
    fast = _decode_plain_jpeg(data, image, jpeg_reduction(width, height, min_side))
    if fast is not None:
        return fast
    try:
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        rgb = _to_rgb_array(image)
    except Exception as exc:  # truncated or corrupt pixel data
        reason = "truncated" if "truncated" in str(exc).lower() else f"corrupt ({exc})"
        raise InvalidImage(f"the image data is {reason}") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _decode_plain_jpeg(data: bytes, image: Image.Image, reduction: int) -> np.ndarray | None:
    """A complete upright RGB or grey JPEG decoded by OpenCV straight to BGR (a third of Pillow's time,
    the same pixels: both use libjpeg-turbo), at ``1 / reduction`` of its size; None for anything
    else, which Pillow decodes."""
    if image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return None
    if image.getexif().get(EXIF_ORIENTATION, 1) != 1 or not data.rstrip(b"\0").endswith(JPEG_END):
        return None  # rotated, or truncated: Pillow turns the first upright and rejects the second
    flags = REDUCED_JPEG_FLAGS.get(reduction, cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    expected = (-(-image.height // reduction), -(-image.width // reduction))
    if bgr is None or bgr.shape[:2] != expected:
        return None
    return bgr if reduction == 1 else ReducedImage.wrap(bgr, reduction, (image.height, image.width))


def encode_jpeg(bgr: np.ndarray, quality: int = 90) -> bytes:
    """Encode a BGR array as JPEG bytes (used for stored face crops)."""
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise InvalidImage(f"cannot encode a {bgr.shape} array as JPEG")
    return encoded.tobytes()
