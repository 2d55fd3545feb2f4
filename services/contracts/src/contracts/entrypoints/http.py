"""Contracts over HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from orderflow.db import Pool
from orderflow.http import PROBLEM_RESPONSES, Problem, ProblemDetails
from orderflow.messages import Language

from ..adapters import repository
from ..domain import ContractContent, ContractStatus


class Contract(BaseModel):
    id: UUID
    number: str
    order_id: UUID
    revision: int
    status: ContractStatus
    language: Language
    drafted_at: datetime
    status_changed_at: datetime
    superseded_by: UUID | None
    content_version: int
    content: ContractContent


class ContractList(BaseModel):
    items: list[Contract]


def _pool(request: Request) -> Pool:
    return request.app.state.runtime.pool  # type: ignore[no-any-return]


def _contract(row: dict[str, Any]) -> Contract:
    return Contract.model_validate(row)


router = APIRouter(prefix="/api/v1", tags=["contracts"], responses=PROBLEM_RESPONSES)


@router.get(
    "/contracts/{contract_id}",
    responses={404: {"model": ProblemDetails, "description": "No such contract"}},
)
async def get_contract(request: Request, contract_id: UUID) -> Contract:
    """One contract: its number, status and every term as drafted."""
    row = await repository.get(_pool(request), contract_id=contract_id)
    if row is None:
        raise Problem(404, "Contract not found", f"no contract {contract_id}")
    return _contract(row)


@router.get("/contracts")
async def list_contracts(
    request: Request,
    order_id: Annotated[UUID, Query(description="The order whose contracts to list")],
) -> ContractList:
    """The contracts of an order, newest revision first."""
    rows = await repository.of_order(_pool(request), order_id=order_id)
    return ContractList(items=[_contract(r) for r in rows])
