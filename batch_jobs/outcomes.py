"""What a bulk enrollment does with each input, and its policies for images with several faces."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The outcome of one input, as written to the job's report."""

    ENROLLED = "enrolled"                  # its face(s) are stored
    ALREADY_ENROLLED = "already_enrolled"  # a previous run stored it; skipped
    NO_FACE = "no_face"                    # no face above the detection threshold
    MULTIPLE_FACES = "multiple_faces"      # several faces and the policy is "reject"
    INVALID = "invalid"                    # unreadable or not an image; the reason says why


class OnMultiple(StrEnum):
    """Policy for an image with several faces (FindFace's ``mf_selector``)."""

    LARGEST = "largest"  # enroll the largest face only
    REJECT = "reject"    # enroll nothing, report the image
    ALL = "all"          # enroll every face
