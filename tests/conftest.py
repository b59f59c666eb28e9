"""Shared fixtures: the test photo folder and one face pipeline per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from facecore.pipeline import FacePipeline, PipelineConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_data_dir() -> Path:
    """``FACES_TEST_DATA`` or ``../shared/data``; missing data fails the test, it never skips."""
    root = Path(os.environ.get("FACES_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not (root / "lfw-dev" / "pairs.txt").is_file():
        pytest.fail(f"test photos not found at {root}: set FACES_TEST_DATA")
    return root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return test_data_dir()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def pipeline(models_dir) -> FacePipeline:
    return FacePipeline(PipelineConfig(threads=2, cache_dir=str(models_dir)))


@pytest.fixture(scope="session")
def lfw_image(data_dir) -> bytes:
    return (data_dir / "lfw-dev" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg").read_bytes()
