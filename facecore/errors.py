"""The one exception hierarchy of the face pipeline.

Every error a caller can cause carries a message a user can act on. The serving layer maps these
classes to HTTP status codes in one place; library code raises only these for client mistakes.
"""


class FaceError(Exception):
    """Base class of every error the face pipeline raises on purpose."""


class InvalidImage(FaceError):
    """The bytes are not an image we can decode (empty, not an image, truncated, corrupt)."""


class UnsupportedFormat(InvalidImage):
    """The bytes are an image, but in a format we do not decode."""


class ImageTooLarge(FaceError):
    """The upload exceeds the byte limit."""


class TooManyPixels(FaceError):
    """The image declares more pixels than allowed (decompression bomb guard)."""


class NoFaceFound(FaceError):
    """An operation needs a face and the image has none above the detection threshold."""


class ModelError(FaceError):
    """A model file is missing, unreadable or of an unexpected shape."""
