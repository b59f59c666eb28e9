"""Face plugins (``face_plugins=``) and the per-face JSON of results in CompreFace's shape."""

from __future__ import annotations

from facecore.face_json import box_json, embedding_json, landmarks_json, pose_json
from facecore.pipeline import Face
from serve_app.errors import BAD_PARAMETER, ApiError

AVAILABLE_PLUGINS = ("landmarks", "calculator", "pose", "quality")
STAGE_NAMES = {"decode": "decode", "detect": "detector", "align": "align", "embed": "calculator"}
PLUGIN_VERSIONS = {"pose": "landmarks-pnp@1", "quality": "quality@1"}


def parse_plugins(value: str | None) -> frozenset[str]:
    names = frozenset(p.strip().lower() for p in (value or "").split(",") if p.strip())
    unknown = names - set(AVAILABLE_PLUGINS)
    if unknown:
        raise ApiError(400, f"unknown face plugin(s) {', '.join(sorted(unknown))}; available: "
                            f"{', '.join(AVAILABLE_PLUGINS)}", BAD_PARAMETER)
    return names


def needs_embedding(plugins: frozenset[str]) -> bool:
    return bool(plugins & {"calculator", "quality"})


def execution_time(timings: dict[str, float], extra: dict[str, float] | None = None) -> dict[str, float]:
    result = {STAGE_NAMES.get(stage, stage): round(ms, 2) for stage, ms in timings.items()}
    result.update({k: round(v, 2) for k, v in (extra or {}).items()})
    return result


def face_json(face: Face, plugins: frozenset[str], timings: dict[str, float]) -> dict:
    result: dict = {"box": box_json(face)}
    if "landmarks" in plugins:
        result["landmarks"] = landmarks_json(face)
    if "pose" in plugins:
        result["pose"] = pose_json(face)
    if "quality" in plugins and face.quality is not None:
        q = face.quality
        result["quality"] = {"score": round(q.score, 4), "detection": round(q.detection, 4), "size": round(q.size, 4),
                             "sharpness": round(q.sharpness, 4), "pose": round(q.pose, 4)}
    if "calculator" in plugins and face.embedding is not None:
        result["embedding"] = embedding_json(face)
    result["execution_time"] = timings
    return result


def plugins_versions(model_versions: dict[str, str], plugins: frozenset[str]) -> dict[str, str]:
    """CompreFace's ``plugins_versions``, plus ``backend``: what runs the models (``openvino/CPU/bf16``)."""
    versions = {"detector": model_versions["detector"],
                "backend": "/".join(model_versions[key] for key in ("backend", "device", "precision"))}
    for plugin in sorted(plugins):
        if plugin == "calculator":
            versions["calculator"] = model_versions["calculator"]
        elif plugin == "landmarks":
            versions["landmarks"] = model_versions["detector"]
        else:
            versions[plugin] = PLUGIN_VERSIONS[plugin]
    return versions
