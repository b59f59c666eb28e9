"""Deterministic face ids of bulk jobs: the same face of the same input always gets the same id.

That is what makes enrollment idempotent and resumable: a re-run computes the ids it would write,
finds them stored, and skips the input.
"""

from __future__ import annotations

import uuid

FACE_ID_NAMESPACE = uuid.UUID("6f3c1f0e-3c1a-4f57-9a53-3f2d1b8e7a10")


def face_id(service_id: int, source: str, index: int, given: str | None = None) -> str:
    """Id of face ``index`` (0: the largest) of image ``source`` enrolled into service ``service_id``.

    Without ``given`` it is a UUID5 of (service, source URI, face index). A manifest's own
    ``face_id`` (``given``) names face 0; further faces of that image get ``<face_id>#<index>``.
    """
    if index < 0:
        raise ValueError(f"face index must be >= 0, got {index}")
    if given:
        return given if index == 0 else f"{given}#{index}"
    return str(uuid.uuid5(FACE_ID_NAMESPACE, f"{int(service_id)}\n{source}\n{index}"))
