"""Query parameters shared by several endpoints."""

from __future__ import annotations

from fastapi import Query

DetProbThreshold = Query(None, ge=0.0, le=1.0, description="minimum detection probability (service default 0.8)")
Limit = Query(0, ge=0, le=1000, description="largest N faces (0: all)")
FacePlugins = Query(None, description="comma-separated: landmarks, calculator, pose, quality")
Status = Query(False, description="add plugins_versions to the response")
PredictionCount = Query(1, ge=1, le=100, description="subjects to return per face")
Threshold = Query(None, ge=0.0, le=1.0, description="similarity below which a face is 'unknown' (service default)")
