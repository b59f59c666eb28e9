"""``faces detect | embed | verify | eval-pairs``: the face pipeline from the shell."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from facecore.face_json import face_to_dict
from facecore.errors import FaceError, ModelError
from facecore.embed import DEFAULT_EMBEDDING_MODEL, EMBEDDING_MODELS
from facecore.evaluation import evaluate_pairs, labelled_face, parse_pairs
from facecore.pipeline import FacePipeline
from faces_settings import get_settings
from facecore.similarity import similarity_from_cosine

EVAL_CHUNK = 16


def _pipeline(model: str = DEFAULT_EMBEDDING_MODEL) -> FacePipeline:
    return FacePipeline(dataclasses.replace(get_settings().pipeline_config(), model=model))


def _analyze_file(pipeline: FacePipeline, path: str, threshold: float, limit: int, embed: bool):
    data = Path(path).read_bytes()
    if embed:
        return pipeline.analyze([data], threshold, limit)[0]
    return pipeline.detect([data], threshold, limit)[0]


def _faces_command(args: argparse.Namespace, embed: bool) -> int:
    pipeline = _pipeline()
    failures = 0
    results = []
    for path in args.images:
        try:
            faces = _analyze_file(pipeline, path, args.det_prob_threshold, args.limit, embed)
            results.append({"image": path, "faces": [face_to_dict(f, with_embedding=embed) for f in faces]})
        except (FaceError, OSError) as exc:
            failures += 1
            results.append({"image": path, "error": str(exc)})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for item in results:
            if "error" in item:
                print(f"{item['image']}: error: {item['error']}")
                continue
            print(f"{item['image']}: {len(item['faces'])} face(s)")
            for face in item["faces"]:
                box, pose = face["box"], face["pose"]
                line = (f"  box=({box['x_min']},{box['y_min']},{box['x_max']},{box['y_max']}) "
                        f"p={box['probability']:.3f} yaw={pose['yaw']:.0f} pitch={pose['pitch']:.0f} "
                        f"roll={pose['roll']:.0f}")
                if "quality" in face:
                    line += f" quality={face['quality']:.2f}"
                if embed:
                    line += f" embedding[:4]={face['embedding'][:4]}"
                print(line)
    return 1 if failures else 0


def detect_command(args: argparse.Namespace) -> int:
    return _faces_command(args, embed=False)


def embed_command(args: argparse.Namespace) -> int:
    return _faces_command(args, embed=True)


def verify_command(args: argparse.Namespace) -> int:
    pipeline = _pipeline()
    settings = get_settings()
    try:
        first, second = pipeline.embed([Path(args.image_a).read_bytes(), Path(args.image_b).read_bytes()],
                                       args.det_prob_threshold, limit=1)
    except (FaceError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = [name for name, vectors in ((args.image_a, first), (args.image_b, second)) if len(vectors) == 0]
    if missing:
        print(f"error: no face found in {', '.join(missing)}", file=sys.stderr)
        return 2
    cosine = float(first[0] @ second[0])
    similarity = float(similarity_from_cosine(cosine))
    same = similarity >= settings.similarity_threshold
    result = {"similarity": round(similarity, 5), "cosine": round(cosine, 5), "same_person": same,
              "threshold": settings.similarity_threshold}
    if args.json:
        print(json.dumps(result))
    else:
        verdict = "same person" if same else "different people"
        print(f"{verdict}: similarity {similarity:.4f} (threshold {settings.similarity_threshold}), cosine {cosine:.4f}")
    return 0


def _embed_paths(pipeline: FacePipeline, threshold: float):
    def embed_images(paths: list[Path]) -> dict[Path, np.ndarray | None]:
        vectors: dict[Path, np.ndarray | None] = {}
        for start in range(0, len(paths), EVAL_CHUNK):
            chunk = paths[start:start + EVAL_CHUNK]
            for path in chunk:
                vectors[path] = None
            readable = []
            for path in chunk:
                try:
                    readable.append((path, pipeline.decode([path.read_bytes()])[0]))
                except (FaceError, OSError):
                    continue
            analyzed = pipeline.analyze([image for _, image in readable], threshold, quality=False)
            for (path, image), faces in zip(readable, analyzed):
                face = labelled_face(faces, image.shape)
                vectors[path] = None if face is None else face.embedding
        return vectors

    return embed_images


def eval_pairs_command(args: argparse.Namespace) -> int:
    try:
        pairs = parse_pairs(Path(args.pairs), Path(args.root))
        pipeline = _pipeline(args.model)  # a model not built, without the dlib extra: a ModelError
    except (OSError, ValueError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = evaluate_pairs(pairs, _embed_paths(pipeline, args.det_prob_threshold))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    print(f"pairs: {report.pairs} in {report.folds} folds, images: {report.images}")
    print(f"accuracy: {report.accuracy_mean:.4f} +- {report.accuracy_std:.4f}")
    if args.model == DEFAULT_EMBEDDING_MODEL:  # the similarity scale is calibrated on SFace's cosines
        similarity = float(similarity_from_cosine(report.threshold))
        print(f"threshold: cosine {report.threshold:.4f} (similarity {similarity:.4f})")
    else:
        print(f"threshold: cosine {report.threshold:.4f}")
    tar = "n/a" if report.tar_at_far_1e3 is None else f"{report.tar_at_far_1e3:.4f}"
    print(f"TAR@FAR=1e-3: {tar} ({report.tar_note})")
    print(f"images without a detected face: {report.images_without_face} "
          f"({report.pairs_without_face} pairs counted wrong)")
    return 0


def add_parsers(subparsers, default_threshold: float) -> None:
    def with_detection_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--det-prob-threshold", type=float, default=default_threshold,
                            help="minimum detection probability (default %(default)s)")
        parser.add_argument("--json", action="store_true", help="print JSON")
        return parser

    detect = with_detection_options(subparsers.add_parser("detect", help="detect faces in images"))
    detect.add_argument("images", nargs="+")
    detect.add_argument("--limit", type=int, default=0, help="largest N faces per image (0: all)")
    detect.set_defaults(handler=detect_command)

    embed = with_detection_options(subparsers.add_parser("embed", help="detect and embed faces"))
    embed.add_argument("images", nargs="+")
    embed.add_argument("--limit", type=int, default=0, help="largest N faces per image (0: all)")
    embed.set_defaults(handler=embed_command)

    verify = with_detection_options(subparsers.add_parser("verify", help="are the largest faces of two images the same person?"))
    verify.add_argument("image_a")
    verify.add_argument("image_b")
    verify.set_defaults(handler=verify_command)

    evaluate = with_detection_options(subparsers.add_parser("eval-pairs", help="LFW verification protocol on a pairs file"))
    evaluate.add_argument("--pairs", required=True, help="pairs file in LFW format")
    evaluate.add_argument("--root", required=True, help="folder with one sub-folder per person")
    evaluate.add_argument("--model", choices=list(EMBEDDING_MODELS), default=DEFAULT_EMBEDDING_MODEL,
                          help="embedding model (default %(default)s)")
    evaluate.set_defaults(handler=eval_pairs_command)
