"""Subjects of a recognition service: create, list, rename (merging into an existing one), delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from serve_app.auth import recognition_service
from serve_app.context import AppContext, request_context
from serve_app.schemas import Deleted, SubjectBody, SubjectCount, SubjectsList, SubjectsPage, Updated
from serve_app.validation import FilterName
from store.control import Service

router = APIRouter(prefix="/api/v1/recognition/subjects", tags=["subjects"])
Ctx = Annotated[AppContext, Depends(request_context)]
RecognitionService = Annotated[Service, Depends(recognition_service)]
SubjectPath = Annotated[FilterName, Path(description="the subject's current name")]


@router.post("", response_model=SubjectBody, status_code=201)
async def add_subject(body: SubjectBody, service: RecognitionService, context: Ctx):
    await (await context.gallery(service)).add_subject(body.subject)
    return SubjectBody(subject=body.subject)


@router.get("", response_model=SubjectsList)
async def list_subjects(service: RecognitionService, context: Ctx):
    return SubjectsList(subjects=await (await context.gallery(service)).subjects())


@router.get("/page", response_model=SubjectsPage)
async def subjects_page(service: RecognitionService, context: Ctx, page: int = Query(0, ge=0, le=10**9),
                        size: int = Query(50, ge=1, le=1000),
                        search: FilterName = Query("", description="only subjects whose name contains this (any case)")):
    """A page of subjects in name order, each with its number of faces."""
    rows, total = await (await context.gallery(service)).subjects_page(page * size, size, search)
    return SubjectsPage(subjects=[SubjectCount(subject=s, faces=n) for s, n in rows], page_number=page,
                        page_size=size, total_elements=total)


@router.put("/{subject}", response_model=Updated)
async def rename_subject(subject: SubjectPath, body: SubjectBody, service: RecognitionService, context: Ctx):
    """Rename ``subject``; if the new name exists, its faces are merged into it."""
    new_name = body.subject
    if new_name == subject:
        return Updated(updated=False)
    await (await context.gallery(service)).rename_subject(subject, new_name)
    return Updated(updated=True)


@router.delete("/{subject}", response_model=SubjectBody)
async def delete_subject(subject: SubjectPath, service: RecognitionService, context: Ctx):
    """Delete a subject and all its faces (the faces first: a retry after a failure finishes the job)."""
    await (await context.gallery(service)).delete_subject(subject)
    return SubjectBody(subject=subject)


@router.delete("", response_model=Deleted)
async def delete_all_subjects(service: RecognitionService, context: Ctx):
    """Delete every subject of the service and all their faces."""
    deleted = await (await context.gallery(service)).delete_all()
    return Deleted(deleted=deleted)
