"""The aligned context crop stored with each face: the chips of every model cut from it embed nearly like
the chips cut from the photo; a face stored before context crops (its 112x112 chip) serves SFace only."""

from __future__ import annotations

import numpy as np
import pytest

from facecore.align import CHIP_SIZE
from facecore.context_crop import CONTEXT_SIZE, CropTooTight, chip_from_crop, chips_of_crops, thumbnail_jpeg
from facecore.evaluation import labelled_face
from facecore.images import decode_image, encode_jpeg

# Least cosine between a chip cut from the stored crop and the chip cut from the photo: SFace's are the
# same pixels; dlib's is placed through dlib's mean face from the crop (the box that dlib's own landmarks
# need is not stored), from dlib's own landmarks in the photo.
MODELS = {"sface": ("arcface112", 0.99), "dlib-resnet": ("dlib150", 0.95)}


@pytest.fixture(scope="module")
def photos(data_dir, pipeline):
    """(decoded photo, its labelled face, its stored context crop) of 12 lfw-dev people."""
    found = []
    for path in sorted((data_dir / "lfw-dev").glob("*/*_0001.jpg"))[::13][:12]:
        image = pipeline.decode([path.read_bytes()])[0]
        face = labelled_face(pipeline.detect_decoded([image], 0.8, 0, None)[0], image.shape)
        found.append((image, face, encode_jpeg(pipeline.context_crops(image, [face])[0])))
    return found


def test_chips_cut_from_the_stored_crop_embed_like_the_photo(pipeline, photos):
    for model, (kind, least) in MODELS.items():
        embedder = pipeline.embedder_for(model)
        for image, face, crop in photos:
            pipeline.describe([image], [[face]], quality=False, model=model)
            from_crop = embedder.embed(chip_from_crop(decode_image(crop), kind)[None])[0]
            assert float(face.embedding @ from_crop) >= least, model


def test_thumbnail_is_the_112_chip(photos):
    _, _, crop = photos[0]
    assert decode_image(crop).shape == (CONTEXT_SIZE, CONTEXT_SIZE, 3)
    assert decode_image(thumbnail_jpeg(crop)).shape == (CHIP_SIZE, CHIP_SIZE, 3)


def test_a_face_stored_before_context_crops_serves_sface_only(photos):
    legacy = encode_jpeg(np.zeros((CHIP_SIZE, CHIP_SIZE, 3), np.uint8) + 90)
    assert thumbnail_jpeg(legacy) == legacy
    assert chip_from_crop(decode_image(legacy), "arcface112").shape == (CHIP_SIZE, CHIP_SIZE, 3)
    with pytest.raises(CropTooTight):
        chip_from_crop(decode_image(legacy), "dlib150")
    chips, errors = chips_of_crops([photos[1][2], legacy, b"not a jpeg"], ["arcface112", "dlib150"])
    assert errors[0] is None and "112x112" in errors[1] and errors[2].startswith("unusable crop")
    assert {kind: len(stack) for kind, stack in chips.items()} == {"arcface112": 1, "dlib150": 1}
