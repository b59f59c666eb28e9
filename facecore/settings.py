"""The platform's one settings object: environment variables prefixed ``FACES_`` (see README)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from facecore.detect import DEFAULT_MAX_SIDE
from facecore.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageLimits
from facecore.pipeline import DEFAULT_DET_PROB_THRESHOLD, PipelineConfig
from facecore.similarity import DEFAULT_SIMILARITY_THRESHOLD


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACES_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="models cache, embedded PostgreSQL, LanceDB tables")
    threads: int | None = Field(None, description="ONNX Runtime threads per model session (unset: all cores)")
    providers: list[str] | None = Field(None, description="ONNX Runtime providers (unset: CUDA if present, CPU)")
    max_detect_side: int = Field(DEFAULT_MAX_SIDE, description="images are shrunk to this longer side for detection")
    detect_batch: int = Field(8, description="images per detector run")
    embed_batch: int = Field(32, description="faces per embedder run")
    max_upload_bytes: int = Field(DEFAULT_MAX_BYTES, description="largest accepted image, in bytes")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, description="largest accepted image, in pixels")
    det_prob_threshold: float = Field(DEFAULT_DET_PROB_THRESHOLD, ge=0, le=1)
    similarity_threshold: float = Field(DEFAULT_SIMILARITY_THRESHOLD, ge=0, le=1)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def pipeline_config(self) -> PipelineConfig:
        return PipelineConfig(
            threads=self.threads, providers=self.providers, max_side=self.max_detect_side,
            detect_batch=self.detect_batch, embed_batch=self.embed_batch,
            limits=ImageLimits(self.max_upload_bytes, self.max_pixels), cache_dir=str(self.models_dir),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
