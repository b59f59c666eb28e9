"""Plain-JSON views of pipeline results, shared by the CLI and the API."""

from __future__ import annotations

from facecore.pipeline import Face


def face_to_dict(face: Face, with_embedding: bool = False) -> dict:
    x1, y1, x2, y2 = (int(round(float(v))) for v in face.box)
    result = {
        "box": {"probability": round(face.score, 5), "x_min": x1, "y_min": y1, "x_max": x2, "y_max": y2},
        "landmarks": [[int(round(float(x))), int(round(float(y)))] for x, y in face.landmarks],
        "pose": {"yaw": round(face.pose.yaw, 2), "pitch": round(face.pose.pitch, 2), "roll": round(face.pose.roll, 2)},
    }
    if face.quality is not None:
        result["quality"] = round(face.quality.score, 4)
    if with_embedding and face.embedding is not None:
        result["embedding"] = [round(float(v), 6) for v in face.embedding]
    return result
