"""Exact search over a shard's rows: one matrix product of the queries with the rows, then a partial
top (argpartition) of a few times ``k`` candidates per query.

Cosine, since both sides are unit length. A shard that sees a GPU takes its candidates from a
half-precision copy of the matrix there instead (:mod:`faceindex.matrix_search`) and re-scores them
here from the float32 rows, so returned scores are exact either way.
"""

from __future__ import annotations

import numpy as np

from faceindex.matrix_search import NumpyMatrixSearch
from faceindex.rows import ShardRows

CANDIDATE_FACTOR = 4      # distinct-subject search looks at CANDIDATE_FACTOR * k + CANDIDATE_SLACK faces
CANDIDATE_SLACK = 16
CANDIDATE_GROWTH = 16     # ...and at 16 times more when those hold fewer than k subjects, then all
SCORE_BUDGET = 32_000_000  # most query x face scores held at once (128 MB of float32)

SubjectHit = tuple[str, float, str]  # (subject, cosine, face_id)
FaceHit = tuple[str, str, float]     # (face_id, subject, cosine)


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest ``scores`` (1-D), best first."""
    if k < len(scores):
        part = np.argpartition(scores, len(scores) - k)[len(scores) - k:]
    else:
        part = np.arange(len(scores))
    return part[np.argsort(-scores[part], kind="stable")]


def score_chunks(queries: np.ndarray, matrix: np.ndarray):
    """Yield (first query index, scores of a block of queries against ``matrix`` rows)."""
    step = max(1, SCORE_BUDGET // max(1, len(matrix)))
    for start in range(0, len(queries), step):
        yield start, queries[start:start + step] @ matrix.T


def distinct_subject_rows(scores: np.ndarray, candidates: np.ndarray, codes: np.ndarray,
                          wanted: int) -> np.ndarray:
    """Rows of the best face of each of the ``wanted`` best subjects, best first.

    Looks among ``candidates`` (the top faces) first, then among 16 times more, then all faces.
    """
    n = len(scores)
    pool = candidates
    while True:
        ordered = pool[np.argsort(-scores[pool], kind="stable")]
        _, first = np.unique(codes[ordered], return_index=True)
        if len(first) >= wanted or len(pool) >= n:
            first.sort()
            return ordered[first[:wanted]]
        size = min(n, len(pool) * CANDIDATE_GROWTH)
        pool = np.argpartition(scores, n - size)[n - size:] if size < n else np.arange(n)


def best_subjects(rows: ShardRows, matrix: np.ndarray, wanted: int) -> list[list[SubjectHit]]:
    """Per query, the best face of each of the ``wanted`` best subjects among all rows."""
    n = rows.n
    codes = rows.codes[:n]
    first_try = min(n, CANDIDATE_FACTOR * wanted + CANDIDATE_SLACK)
    results: list[list[SubjectHit]] = [[] for _ in range(len(matrix))]
    for start, scores in score_chunks(matrix, rows.vectors[:n]):
        if first_try < n:
            candidates = np.argpartition(scores, n - first_try, axis=1)[:, n - first_try:]
        else:
            candidates = np.broadcast_to(np.arange(n), scores.shape)
        for offset, row_scores in enumerate(scores):
            found = distinct_subject_rows(row_scores, candidates[offset], codes, wanted)
            results[start + offset] = [(rows.subject(row), float(row_scores[row]), rows.ids[row]) for row in found]
    return results


def best_faces(rows: ShardRows, matrix: np.ndarray, k: int, among: np.ndarray | None) -> list[list[FaceHit]]:
    """Per query, the top-``k`` faces among all rows, or among the rows ``among``."""
    results: list[list[FaceHit]] = [[] for _ in range(len(matrix))]
    vectors = rows.vectors[:rows.n] if among is None else rows.vectors[among]
    if len(vectors) == 0:
        return results
    for start, scores in score_chunks(matrix, vectors):
        for offset, row_scores in enumerate(scores):
            top = top_rows(row_scores, k)
            found = top if among is None else among[top]
            results[start + offset] = [(rows.ids[row], rows.subject(row), float(row_scores[local]))
                                       for row, local in zip(found, top)]
    return results


def device_scores(device: NumpyMatrixSearch, rows: ShardRows, matrix: np.ndarray,
                  count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: the top ``count`` rows found on the device, re-scored exactly here, best first."""
    found_rows, _ = device.top(matrix, rows.vectors[:rows.n], count, rows.layout)
    scored = []
    for query, found in zip(matrix, found_rows):
        scores = rows.vectors[found] @ query
        order = np.argsort(-scores, kind="stable")
        scored.append((found[order], scores[order]))
    return scored


def device_faces(device: NumpyMatrixSearch, rows: ShardRows, matrix: np.ndarray, k: int) -> list[list[FaceHit]]:
    """:func:`best_faces` over all rows from device candidates."""
    return [[(rows.ids[row], rows.subject(row), float(score)) for row, score in zip(found[:k], scores[:k])]
            for found, scores in device_scores(device, rows, matrix, CANDIDATE_FACTOR * k)]


def device_subjects(device: NumpyMatrixSearch, rows: ShardRows, matrix: np.ndarray,
                    wanted: int) -> list[list[SubjectHit]]:
    """:func:`best_subjects` from device candidates, widened (16x, then all) for queries short of subjects."""
    count = min(rows.n, CANDIDATE_FACTOR * wanted + CANDIDATE_SLACK)
    results: list[list[SubjectHit]] = [[] for _ in range(len(matrix))]
    todo = np.arange(len(matrix))
    while len(todo):
        short = []
        for query, (found, scores) in zip(todo, device_scores(device, rows, matrix[todo], count)):
            _, first = np.unique(rows.codes[found], return_index=True)
            if len(first) < wanted and count < rows.n:
                short.append(query)
                continue
            best = np.sort(first)[:wanted]
            results[query] = [(rows.subject(found[i]), float(scores[i]), rows.ids[found[i]]) for i in best]
        todo, count = np.asarray(short, dtype=np.int64), min(rows.n, count * CANDIDATE_GROWTH)
    return results
