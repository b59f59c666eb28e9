"""facevideo: faces in video, Ray-free: sources (PyAV), tracking, best shots, events.

The Ray actors in ``actors/video.py`` run these pieces per stream; ``faces video scan`` and
``bench/video.py`` run them on one file with a local :class:`facecore.FacePipeline`.
"""
