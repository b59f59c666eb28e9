"""Accuracy of dlib's ResNet by how its chip is cut, and of the fusion by dlib's weight, on LFW pair lists.

For each pairs folder (10-fold protocol of ``faces eval-pairs``, each image's labelled face):

1. dlib's ResNet (the port, on the configured backend) on chips cut three ways, each also with the
   embedding of the mirrored chip added (``+ flip``, twice the ResNet's work):
   - ``detector points``: the platform detector's five landmarks placed through dlib's mean face
     (what a face without a box gets);
   - ``dlib landmarks in detector box``: dlib's 5-point model in the detector's box (the platform's);
   - ``dlib end to end``: dlib-bin's HOG detector (one upsampling) and 5-point model, as
     face_recognition does it (``bench/dlib_baseline.py``); the face nearest the centre; images where
     it finds none count as wrong.
2. The fusion of SFace (weight 1) with the platform's dlib chips for dlib weights 0.5 to 2, and the
   weight the first folder chooses by its 10-fold protocol (most accurate, ties to the best d').

    python bench/dlib_accuracy.py [--folders lfw-dev lfw-dev-raw150] [--threads 2] [--backend auto]

Needs the ``dlib`` extra and dlib-bin (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import data_dir, print_table, save_results  # noqa: E402
from bench.dlib_baseline import DlibPipeline  # noqa: E402
from facecore.align import DLIB_FIVE_POINT_SHAPE, dlib_chip_template, dlib_face_chips  # noqa: E402
from facecore.dlib_landmarks import dlib_chips  # noqa: E402
from facecore.embed import ChipEmbedder, l2_normalize  # noqa: E402
from facecore.evaluation import accuracy_at, best_threshold, labelled_face, parse_pairs  # noqa: E402
from facecore.models import DLIB_RESNET  # noqa: E402
from facecore.pipeline import FacePipeline, PipelineConfig  # noqa: E402

WEIGHTS = np.round(np.arange(0.5, 2.01, 0.05), 2)
SHOWN_WEIGHTS = (0.5, 1.0, 1.25, 1.35, 1.5, 2.0)


def ten_fold(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> float:
    """Mean accuracy over the folds, each scored at the threshold of the others (NaN: wrong)."""
    return float(np.mean([accuracy_at(scores[folds == fold], same[folds == fold],
                                      best_threshold(scores[folds != fold], same[folds != fold]))
                          for fold in np.unique(folds)]))


def separation(scores: np.ndarray, same: np.ndarray) -> float:
    """d': the difference of the same- and different-person means over their pooled deviation."""
    return float((scores[same].mean() - scores[~same].mean()) / np.sqrt((scores[same].var() + scores[~same].var()) / 2))


def fused(sface: np.ndarray, dlib: np.ndarray, weight: float) -> np.ndarray:
    """Cosines of the fusion: the members' cosines averaged with the squared weights."""
    return (sface + weight ** 2 * dlib) / (1 + weight ** 2)


def embed_flipped(embedder: ChipEmbedder, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The chips' embeddings, and those with the mirrored chips' embeddings added."""
    plain = embedder.embed(chips)
    return plain, l2_normalize(plain + embedder.embed(np.ascontiguousarray(chips[:, :, ::-1])))


def folder_embeddings(root: Path, paths: list[Path], pipeline: FacePipeline, dlib: ChipEmbedder,
                      reference: DlibPipeline) -> dict[str, dict[Path, np.ndarray | None]]:
    """Per way of cutting dlib's chip (and SFace), each image's labelled-face embedding (None: no face)."""
    images = pipeline.decode([path.read_bytes() for path in paths])
    faces = [labelled_face(found, image.shape) for found, image in
             zip(pipeline.analyze(images, quality=False), images)]
    found = [i for i, face in enumerate(faces) if face is not None]
    landmarks = np.stack([faces[i].landmarks for i in found])
    boxes = np.stack([faces[i].box[:4] for i in found])
    cuts = {
        "detector points": np.stack([dlib_face_chips(images[i], landmarks[k:k + 1])[0] for k, i in enumerate(found)]),
        "dlib landmarks in detector box": dlib_chips([images[i] for i in found], list(landmarks[:, None]),
                                                     list(boxes[:, None])),
    }
    vectors = {"sface": dict(zip([paths[i] for i in found], [faces[i].embedding for i in found]))}
    for name, chips in cuts.items():
        plain, flipped = embed_flipped(dlib, chips)
        vectors[name] = dict(zip([paths[i] for i in found], plain))
        vectors[f"{name} + flip"] = dict(zip([paths[i] for i in found], flipped))
    template, own, own_paths = dlib_chip_template(DLIB_FIVE_POINT_SHAPE), [], []
    for path, image in zip(paths, images):
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        boxes_found = reference.detect(rgb)
        if boxes_found:
            centre = np.array([image.shape[1], image.shape[0]]) / 2
            box = min(boxes_found, key=lambda b: np.hypot(b.center().x - centre[0], b.center().y - centre[1]))
            shape = reference.shapes(rgb, box)
            points = np.array([[part.x, part.y] for part in shape.parts()], np.float64)
            own.append(dlib_face_chips(image, points[None], template)[0])
            own_paths.append(path)
    plain, flipped = embed_flipped(dlib, np.stack(own))
    vectors["dlib end to end"] = dict(zip(own_paths, plain))
    vectors["dlib end to end + flip"] = dict(zip(own_paths, flipped))
    return vectors


def pair_cosines(pairs, vectors: dict[Path, np.ndarray]) -> np.ndarray:
    return np.array([float(vectors[p.first] @ vectors[p.second]) if p.first in vectors and p.second in vectors
                     else np.nan for p in pairs])


def cell(result: dict) -> str:
    missing = result["pairs_without_face"]
    return f"{result['accuracy']:.4f}" + (f" (no face in {missing} of its pairs)" if missing else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folders", nargs="+", default=["lfw-dev", "lfw-dev-raw150"],
                        help="pairs folders under the test data; the first one chooses the fusion's weight")
    parser.add_argument("--threads", type=int, default=2, help="inference threads")
    parser.add_argument("--backend", default="auto", help="inference backend")
    args = parser.parse_args()
    reference = DlibPipeline()
    results: dict[str, dict] = {}
    chosen_weight = None
    with tempfile.TemporaryDirectory(prefix="bench-dlib-") as cache:
        pipeline = FacePipeline(PipelineConfig(threads=args.threads, backend=args.backend, cache_dir=cache))
        dlib = ChipEmbedder.from_registry(pipeline.config.backend_options(), DLIB_RESNET)
        for folder in args.folders:
            root = data_dir() / folder
            pairs = parse_pairs(root / "pairs.txt", root)
            same, folds = np.array([p.same for p in pairs]), np.array([p.fold for p in pairs])
            paths = sorted({p.first for p in pairs} | {p.second for p in pairs})
            cosines = {name: pair_cosines(pairs, vectors)
                       for name, vectors in folder_embeddings(root, paths, pipeline, dlib, reference).items()}
            platform = cosines["dlib landmarks in detector box"]
            if chosen_weight is None:
                chosen_weight = float(max(WEIGHTS, key=lambda w: (round(ten_fold(fused(cosines["sface"], platform, w),
                                                                                  same, folds), 6),
                                                                   separation(fused(cosines["sface"], platform, w), same))))
            for weight in sorted({*SHOWN_WEIGHTS, chosen_weight}):
                cosines[f"fusion, dlib weight {weight:g}"] = fused(cosines["sface"], platform, weight)
            results[folder] = {name: {"accuracy": ten_fold(scores, same, folds), "pairs_without_face":
                                      int(np.isnan(scores).sum())} for name, scores in cosines.items()}
    names = list(results[args.folders[0]])
    print(f"\n10-fold accuracy; the fusion's weight chosen on {args.folders[0]}: {chosen_weight:g}\n")
    print_table(["embedding", *args.folders],
                [[name, *(cell(results[folder][name]) for folder in args.folders)] for name in names])
    results["chosen_weight"] = chosen_weight
    print(f"\nresults: {save_results('dlib_accuracy', results)}")


if __name__ == "__main__":
    main()
