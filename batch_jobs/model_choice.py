"""Which embedder model a migration targets: registry models by ``name@version`` (no Ray here)."""

from __future__ import annotations

from batch_jobs.errors import JobInputError
from facecore.models import REGISTRY, SFACE, ModelSpec


def embedding_models() -> dict[str, ModelSpec]:
    """The registry's embedding models that can re-embed the stored 112x112 ArcFace-aligned crops,
    by ``name@version`` (dlib's ResNet needs its own, wider 150x150 chip, which crops do not hold)."""
    return {f"{spec.name}@{spec.version}": spec for spec in REGISTRY.values()
            if spec.embedding_dim and spec.chip == "arcface112"}


def target_model(name: str | None) -> str:
    """``name@version`` of the model to migrate to: ``name`` (with or without its version), or the
    platform's embedder when None. :class:`JobInputError` for an unknown model."""
    models = embedding_models()
    if name is None:
        return f"{SFACE.name}@{SFACE.version}"
    matches = [model for model in models if model == name or model.split("@", 1)[0] == name]
    if len(matches) != 1:
        raise JobInputError(f"unknown embedding model {name!r}; known: {', '.join(sorted(models))}")
    return matches[0]
