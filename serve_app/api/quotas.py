"""Admin API: a service's quotas and rate limit (``GET``/``PUT /api/v1/admin/services/{id}/quotas``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from serve_app.auth import require_admin
from serve_app.context import AppContext, request_context
from serve_app.schemas import QuotasOut, QuotasUpdate
from serve_app.validation import RowId

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])
Ctx = Annotated[AppContext, Depends(request_context)]


def _quotas(context: AppContext, service_id: int, overrides: dict) -> QuotasOut:
    return QuotasOut(service_id=service_id, **{**context.settings.default_quotas(), **overrides},
                     custom=sorted(overrides))


@router.get("/services/{service_id}/quotas", response_model=QuotasOut)
async def get_quotas(service_id: RowId, context: Ctx):
    """The service's quotas: those set for it, the platform's defaults for the rest."""
    return _quotas(context, service_id, await (await context.quota_store()).overrides(service_id))


@router.put("/services/{service_id}/quotas", response_model=QuotasOut)
async def set_quotas(service_id: RowId, body: QuotasUpdate, context: Ctx):
    """Set some of the service's quotas; ``null`` returns one to the default. Takes effect at once on
    this ingress replica and within a few seconds on the others."""
    overrides = await (await context.quota_store()).set(service_id, body.model_dump(exclude_unset=True))
    context.quotas.forget(service_id)
    return _quotas(context, service_id, overrides)
