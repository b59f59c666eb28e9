"""The calibrated cosine -> similarity mapping."""

from __future__ import annotations

import numpy as np

from facecore.similarity import (COSINE_THRESHOLD, DEFAULT_RECOGNITION_THRESHOLD, DEFAULT_SIMILARITY_THRESHOLD,
                                 cosine_from_similarity, similarity_from_cosine)


def test_anchor_points_and_range():
    assert abs(similarity_from_cosine(COSINE_THRESHOLD) - DEFAULT_SIMILARITY_THRESHOLD) < 1e-9
    assert abs(similarity_from_cosine(0.0) - 0.02) < 1e-9
    values = similarity_from_cosine(np.linspace(-1, 1, 201))
    assert np.all(np.diff(values) > 0)
    assert values.min() >= 0 and values.max() <= 1


def test_inverse():
    for similarity in (0.1, 0.5, 0.85, 0.99):
        assert abs(similarity_from_cosine(cosine_from_similarity(similarity)) - similarity) < 1e-9


def test_recognition_threshold_is_stricter_than_verification():
    assert DEFAULT_RECOGNITION_THRESHOLD > DEFAULT_SIMILARITY_THRESHOLD
    assert abs(cosine_from_similarity(DEFAULT_RECOGNITION_THRESHOLD) - 0.40) < 0.005


def test_every_embedding_model_has_a_calibration_with_the_platform_thresholds():
    """Each model's curve is monotonic over [-1, 1]; the default 1:N threshold is stricter than the 1:1
    one on every model's own cosine scale, and the scales differ (dlib's ResNet scores strangers high)."""
    from facecore.embed import EMBEDDING_MODELS

    for model in EMBEDDING_MODELS:
        values = similarity_from_cosine(np.linspace(-1, 1, 201), model)
        assert np.all(np.diff(values) >= 0) and values.min() >= 0 and values.max() <= 1
        assert cosine_from_similarity(DEFAULT_RECOGNITION_THRESHOLD, model) > cosine_from_similarity(
            DEFAULT_SIMILARITY_THRESHOLD, model)
    assert abs(cosine_from_similarity(DEFAULT_SIMILARITY_THRESHOLD, "fusion") - 0.695) < 1e-9
    assert cosine_from_similarity(DEFAULT_SIMILARITY_THRESHOLD, "dlib-resnet") > 0.9
