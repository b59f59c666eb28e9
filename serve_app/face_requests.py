"""Sending uploaded images to the Embedder deployment, and embeddings sent by clients."""

from __future__ import annotations

import asyncio

import numpy as np

from actors.face_batch import FaceRequest, FaceResponse, SubjectSearch
from actors.index_shard import CALL_TIMEOUT_S
from facecore.errors import NoFaceFound
from facecore.embed import DEFAULT_EMBEDDING_MODEL, embedding_model
from serve_app.context import AppContext
from serve_app.errors import BAD_PARAMETER, ApiError

# A request waits this long for the Embedder (a replica restarting, a long queue), then fails with 503;
# one that also searches the shards waits for their own bound too, so that their 503 comes first.
EMBEDDER_TIMEOUT_S = 30.0


async def analyze_image(context: AppContext, image: bytes, det_prob_threshold: float, limit: int = 0,
                        embed: bool = True, crops: bool = False, require_face: bool = True,
                        quality: bool = False, search: SubjectSearch | None = None,
                        model: str = DEFAULT_EMBEDDING_MODEL) -> FaceResponse:
    """Faces of one uploaded image; raises the image's own error, or NoFaceFound when required.
    ``quality`` (the quality plugin) adds each face's quality scores; ``search``, each face's best
    subjects (searched by the embedder with the other requests of its batch); ``model``: the
    embedding model (the service's)."""
    request = FaceRequest(image=image, det_prob_threshold=det_prob_threshold, limit=limit, embed=embed, crops=crops,
                          quality=quality, search=search, model=model)
    timeout_s = EMBEDDER_TIMEOUT_S + (CALL_TIMEOUT_S if search is not None else 0.0)
    response: FaceResponse = (await asyncio.wait_for(context.embedder.process.remote(request), timeout_s)).unwrap()
    if require_face and not response.faces:
        raise NoFaceFound("No face is found in the given image")
    return response


def embeddings_matrix(rows, field: str, model: str = DEFAULT_EMBEDDING_MODEL) -> np.ndarray:
    """Client-sent embeddings (of embedding model ``model``, the service's) as unit-length float32
    rows; 400 for a wrong length or non-numbers."""
    dim = embedding_model(model).embedding_dim
    try:
        matrix = np.asarray(rows, dtype=np.float32)
    except (TypeError, ValueError):
        raise ApiError(400, f"'{field}' must be a list of {dim}-number lists", BAD_PARAMETER) from None
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] != dim:
        raise ApiError(400, f"'{field}' must hold embeddings of {dim} numbers (the service's model is {model}); "
                            f"got shape {list(matrix.shape)}", BAD_PARAMETER)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.all(np.isfinite(matrix)) or np.any(norms == 0):
        raise ApiError(400, f"'{field}' holds a zero or non-finite embedding", BAD_PARAMETER)
    return matrix / norms
