"""``faces cluster DIR [--json] [--out FILE]``: group the faces of a folder of photos by person, offline.

No server, Ray or database: every image under DIR (recursively) goes through the local face
pipeline, and the faces are clustered by average linkage at the calibrated recognition threshold
(:mod:`facecore.face_clusters`). Clusters are printed largest first; a face alike to no other is a
cluster of its own. Exit status: 0 done, 2 DIR is no folder, holds no image, or more faces than
one run clusters (:data:`MAX_FACES`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecore.errors import FaceError
from facecore.face_clusters import agglomerate, cluster_threshold
from facecore.pipeline import Face, FacePipeline
from faces_settings import get_settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
CHUNK = 16
MAX_FACES = 30_000  # the clustering holds an n x n float32 matrix: 3.6 GB at this size


@dataclass(frozen=True)
class FoundFace:
    image: str
    index: int  # the face's rank in its image, largest first
    face: Face

    def to_dict(self) -> dict:
        return {"image": self.image, "face": self.index, "box": [round(float(v), 1) for v in self.face.box],
                "quality": round(float(self.face.quality.score), 3)}


def image_paths(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def find_faces(pipeline: FacePipeline, paths: list[Path], det_prob_threshold: float,
               limit: int) -> tuple[list[FoundFace], list[dict]]:
    """The faces of every image (at most ``limit`` per image, 0: all), and the images that failed."""
    found, errors = [], []
    for start in range(0, len(paths), CHUNK):
        readable, decoded = [], []
        for path in paths[start:start + CHUNK]:
            try:
                decoded.append(pipeline.decode([path.read_bytes()])[0])
                readable.append(path)
            except (FaceError, OSError) as exc:
                errors.append({"image": str(path), "error": str(exc)})
        faces = pipeline.detect_decoded(decoded, det_prob_threshold, limit, None)
        pipeline.describe(decoded, faces)
        for path, per_image in zip(readable, faces):
            found.extend(FoundFace(str(path), index, face) for index, face in enumerate(per_image))
    return found, errors


def cluster_result(faces: list[FoundFace], similarity: float) -> list[list[FoundFace]]:
    """The faces grouped into clusters, largest first."""
    if not faces:
        return []
    labels = agglomerate(np.stack([found.face.embedding for found in faces]), cluster_threshold(similarity))
    clusters: list[list[FoundFace]] = [[] for _ in range(int(labels.max()) + 1)]
    for found, label in zip(faces, labels):
        clusters[label].append(found)
    return clusters


def _print_text(clusters: list[list[FoundFace]], errors: list[dict], images: int) -> None:
    for number, members in enumerate(clusters, start=1):
        print(f"cluster {number}: {len(members)} face(s)")
        for found in members:
            box = ",".join(f"{v:.0f}" for v in found.face.box)
            print(f"  {found.image} [face {found.index}] box=({box}) quality={found.face.quality.score:.2f}")
    for error in errors:
        print(f"{error['image']}: error: {error['error']}")
    alone = sum(1 for members in clusters if len(members) == 1)
    faces = sum(map(len, clusters))
    print(f"{images} image(s), {faces} face(s): {len(clusters) - alone} cluster(s) of several faces, "
          f"{alone} face(s) alike to no other")


def cluster_command(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"error: {folder} is not a folder", file=sys.stderr)
        return 2
    paths = image_paths(folder)
    if not paths:
        print(f"error: no image ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}", file=sys.stderr)
        return 2
    pipeline = FacePipeline(get_settings().pipeline_config())
    faces, errors = find_faces(pipeline, paths, args.det_prob_threshold, 1 if args.largest else 0)
    if len(faces) > MAX_FACES:
        print(f"error: {len(faces)} faces found, more than the {MAX_FACES} one run clusters (its memory grows "
              "with the square of the faces); cluster sub-folders, or use --largest", file=sys.stderr)
        return 2
    clusters = cluster_result(faces, args.threshold)
    result = {"folder": str(folder), "threshold": args.threshold, "images": len(paths),
              "faces": len(faces), "clusters": [[found.to_dict() for found in members] for members in clusters],
              "errors": errors}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_text(clusters, errors, len(paths))
    return 0


def _similarity(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"a similarity between 0 and 1 (exclusive), got {text}")
    return value


def add_parsers(subparsers, det_prob_threshold: float, recognition_threshold: float) -> None:
    cluster = subparsers.add_parser("cluster", help="group the faces of a folder of photos by person (offline)")
    cluster.add_argument("folder", help="folder of photos, read recursively")
    cluster.add_argument("--threshold", type=_similarity, default=recognition_threshold,
                         help="calibrated similarity at which clusters stop merging (default: the recognition "
                              f"threshold, FACES_RECOGNITION_THRESHOLD, {recognition_threshold})")
    cluster.add_argument("--largest", action="store_true", help="only the largest face of each photo")
    cluster.add_argument("--det-prob-threshold", type=float, default=det_prob_threshold)
    cluster.add_argument("--json", action="store_true", help="print JSON")
    cluster.add_argument("--out", default=None, help="also write the clusters as JSON into this file")
    cluster.set_defaults(handler=cluster_command)
