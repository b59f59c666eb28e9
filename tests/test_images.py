"""The bad-input corpus: every odd upload gives the right typed error or the right image."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from facecore.errors import ImageTooLarge, InvalidImage, TooManyPixels, UnsupportedFormat
from facecore.images import ImageLimits, decode_image
from image_samples import encode, png_header_only


def test_empty_body_is_invalid():
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"")


def test_text_is_not_an_image():
    with pytest.raises(InvalidImage, match="not an image"):
        decode_image(b"hello, this is plainly text and not a picture\n" * 10)


def test_truncated_jpeg(lfw_image):
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(lfw_image[: len(lfw_image) // 2])


def test_one_pixel_image_decodes_and_has_no_face(pipeline):
    data = encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG")
    image = decode_image(data)
    assert image.shape == (1, 1, 3)
    assert image[0, 0].tolist() == [30, 20, 10]
    assert pipeline.detect([data]) == [[]]


def test_decompression_bomb_header_is_rejected_before_decoding():
    with pytest.raises(TooManyPixels, match="30000x30000"):
        decode_image(png_header_only(30000, 30000))


def test_byte_limit():
    data = encode(Image.new("RGB", (64, 64)), "BMP")
    with pytest.raises(ImageTooLarge, match="limit"):
        decode_image(data, ImageLimits(max_bytes=len(data) - 1))


def test_unsupported_format():
    data = encode(Image.new("RGB", (16, 16)), "PPM")
    with pytest.raises(UnsupportedFormat, match="PPM"):
        decode_image(data)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 32), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    image = decode_image(data)
    assert image.shape == (32, 32, 3)
    blue, green, red = image[16, 16].tolist()
    assert red > 200 and blue < 50


def test_cmyk_jpeg_becomes_bgr():
    data = encode(Image.new("RGB", (40, 40), (200, 30, 30)).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    image = decode_image(data)
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8
    blue, green, red = image[20, 20].astype(int).tolist()
    assert red > 150 and green < 80 and blue < 80


def test_sixteen_bit_grey_png_is_scaled_to_eight_bits():
    grey = np.full((20, 30), 65535, dtype=np.uint16)
    grey[:, :15] = 32896
    ok, png = cv2.imencode(".png", grey)
    assert ok
    image = decode_image(png.tobytes())
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert image[5, 25].tolist() == [255, 255, 255]
    assert abs(int(image[5, 5, 0]) - 128) <= 1


def test_sixteen_bit_colour_png():
    colour = np.zeros((10, 10, 3), dtype=np.uint16)
    colour[..., 2] = 60000  # red in BGR order
    ok, png = cv2.imencode(".png", colour)
    assert ok
    image = decode_image(png.tobytes())
    assert image.dtype == np.uint8
    assert image[5, 5].tolist()[2] > 220 and image[5, 5].tolist()[0] < 10


def test_rgba_png_drops_alpha_onto_white():
    rgba = Image.new("RGBA", (10, 10), (0, 0, 255, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    image = decode_image(encode(rgba, "PNG"))
    assert image.shape == (10, 10, 3)
    assert image[5, 5].tolist() == [255, 0, 0]
    assert image[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("fmt", ["BMP", "WEBP", "TIFF"])
def test_other_formats_decode(fmt):
    data = encode(Image.new("RGB", (24, 12), (0, 255, 0)), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    image = decode_image(data)
    assert image.shape == (12, 24, 3)
    assert image[6, 12].tolist() == [0, 255, 0]


def test_exif_rotated_jpeg_is_made_upright(lfw_image, pipeline):
    upright = Image.open(io.BytesIO(lfw_image))
    # Stored rotated 90 degrees clockwise, with orientation 8 telling viewers to turn it back.
    stored = upright.transpose(Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 8
    data = encode(stored, "JPEG", exif=exif.tobytes(), quality=95)
    image = decode_image(data)
    assert image.shape[:2] == (upright.height, upright.width)
    reference = pipeline.detect([lfw_image], limit=1)[0][0]
    rotated = pipeline.detect([data], limit=1)[0][0]
    assert np.abs(rotated.box - reference.box).max() < 8
    assert abs(rotated.pose.roll) < 15
