"""A list of face ids packed for saving: one UTF-8 text of the ids back to back and each id's length.

About 1 byte per character plus 4 per id, where a numpy unicode array takes 4 bytes per character
of the longest id, and packing, comparing with a list of ids and writing take no Python object per
id. A restarted shard whose rows hold the saved ids in the saved order (the table's order: nothing
deleted since the index was built) learns so from one comparison instead of a look-up per id.
"""

from __future__ import annotations

import numpy as np

ENCODING = "utf-8"
ERRORS = "surrogatepass"  # any Python string packs and unpacks unchanged


def _lengths(ids: list[str]) -> np.ndarray:
    return np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))


class PackedIds:
    """Face ids in order, as ``text`` (their UTF-8 bytes back to back) and ``lengths`` (characters)."""

    def __init__(self, text: bytes, lengths: np.ndarray):
        if int(lengths.sum()) != len(text.decode(ENCODING, ERRORS)):
            raise ValueError("the packed ids' lengths do not add up to their text")
        self.text = text
        self.lengths = lengths

    @classmethod
    def pack(cls, ids: list[str]) -> "PackedIds":
        return cls("".join(ids).encode(ENCODING, ERRORS), _lengths(ids))

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        return iter(self.unpack())

    def nbytes(self) -> int:
        return len(self.text) + self.lengths.nbytes

    def equals(self, ids: list[str]) -> bool:
        """Whether ``ids`` are exactly these ids, in this order."""
        return (len(ids) == len(self) and np.array_equal(_lengths(ids), self.lengths)
                and "".join(ids).encode(ENCODING, ERRORS) == self.text)

    def unpack(self) -> list[str]:
        text = self.text.decode(ENCODING, ERRORS)
        ends = np.cumsum(self.lengths, dtype=np.int64).tolist()
        return [text[start:end] for start, end in zip([0, *ends[:-1]], ends)]
