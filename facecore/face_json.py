"""Plain-JSON views of faces in CompreFace's shapes, shared by the CLI and the HTTP API."""

from __future__ import annotations

from facecore.pipeline import Face


def box_json(face: Face) -> dict:
    return box_of(face.box, face.score)


def box_of(box, score: float) -> dict:
    """A box ``(x1, y1, x2, y2)`` in pixels and its detection score as the API shows them."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    return {"probability": round(float(score), 5), "x_max": x2, "y_max": y2, "x_min": x1, "y_min": y1}


def landmarks_json(face: Face) -> list[list[int]]:
    return [[int(round(float(x))), int(round(float(y)))] for x, y in face.landmarks]


def pose_json(face: Face) -> dict:
    return {"pitch": round(face.pose.pitch, 2), "roll": round(face.pose.roll, 2), "yaw": round(face.pose.yaw, 2)}


def embedding_json(face: Face) -> list[float]:
    return [round(float(v), 7) for v in face.embedding]


def face_to_dict(face: Face, with_embedding: bool = False) -> dict:
    """Everything the pipeline knows about a face (the CLI's view)."""
    result = {"box": box_json(face), "landmarks": landmarks_json(face), "pose": pose_json(face)}
    if face.quality is not None:
        result["quality"] = round(face.quality.score, 4)
    if with_embedding and face.embedding is not None:
        result["embedding"] = embedding_json(face)
    return result
