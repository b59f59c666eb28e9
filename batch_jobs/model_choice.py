"""Which embedding model a migration targets: the platform's models by ``name@version`` (no Ray here)."""

from __future__ import annotations

from batch_jobs.errors import JobInputError
from facecore.embed import EMBEDDING_MODELS, model_id


def embedding_models() -> dict[str, str]:
    """Model name of every embedding model (:data:`facecore.embed.EMBEDDING_MODELS`), by ``name@version``."""
    return {model_id(name): name for name in EMBEDDING_MODELS}


def target_model(name: str | None, current: str) -> str:
    """``name@version`` of the model to migrate to: ``name`` (with or without its version), or the
    service's ``current`` model when None. :class:`JobInputError` for an unknown model."""
    models = embedding_models()
    wanted = current if name is None else name
    matches = [model for model in models if model == wanted or models[model] == wanted]
    if len(matches) != 1:
        raise JobInputError(f"unknown embedding model {wanted!r}; known: {', '.join(sorted(models))}")
    return matches[0]
