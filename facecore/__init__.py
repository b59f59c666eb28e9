"""facecore: the face pipeline as a plain library (no Ray).

    >>> from facecore import FacePipeline
    >>> pipeline = FacePipeline()
    >>> faces = pipeline.analyze([open("photo.jpg", "rb").read()])[0]
    >>> faces[0].box, faces[0].embedding.shape
"""

from facecore.errors import (FaceError, ImageTooLarge, InvalidImage, ModelError, NoFaceFound,
                             TooManyPixels, UnsupportedFormat)
from facecore.images import ImageLimits, decode_image
from facecore.pipeline import Face, FacePipeline, PipelineConfig
from facecore.similarity import cosine_from_similarity, similarity_from_cosine

__all__ = [
    "Face", "FaceError", "FacePipeline", "ImageLimits", "ImageTooLarge", "InvalidImage", "ModelError",
    "NoFaceFound", "PipelineConfig", "TooManyPixels", "UnsupportedFormat", "cosine_from_similarity",
    "decode_image", "similarity_from_cosine",
]
