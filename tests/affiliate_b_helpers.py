"""Affiliate rows written directly (programs, terms, enrollments, clicks) for the
commission tests; the programs and tracking code that normally write them are
another part of the platform."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from coalition import clock
from tests.helpers import new_key

NOW = clock.now() - timedelta(minutes=1)
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


async def affiliate(db: asyncpg.Pool, *, email: str | None = None,
                    member_id: uuid.UUID | None = None,
                    payout_member_id: uuid.UUID | None = None) -> uuid.UUID:
    return await db.fetchval(
        "INSERT INTO affiliates (kind, name, email, member_id, payout_member_id)"
        " VALUES ('person', $1, $2, $3, $4) RETURNING id", f"Blogger {new_key()[:6]}",
        email or f"{new_key()[:12]}@affiliate.example", member_id, payout_member_id)


async def program(db: asyncpg.Pool, partner_id: uuid.UUID, *, model: str = "percent",
                  rate_bp: int | None = 1000, tiers: list | None = None,
                  flat_minor: int | None = None, category_rates: dict | None = None,
                  recurring_months: int | None = None, window_days: int = 30,
                  click_model: str = "last_click", hold_days: int = 30,
                  effective_from: datetime = LONG_AGO, status: str = "active",
                  currency: str = "PLN") -> uuid.UUID:
    program_id = await db.fetchval(
        "INSERT INTO affiliate_programs (partner_id, name, landing_url, currency, status)"
        " VALUES ($1, $2, 'https://shop.example/', $3, $4) RETURNING id",
        partner_id, f"Program {new_key()[:8]}", currency, status)
    await terms(db, program_id, partner_id, 1, model=model, rate_bp=rate_bp, tiers=tiers,
                flat_minor=flat_minor, category_rates=category_rates,
                recurring_months=recurring_months, window_days=window_days,
                click_model=click_model, hold_days=hold_days, effective_from=effective_from)
    return program_id


async def terms(db: asyncpg.Pool, program_id: uuid.UUID, partner_id: uuid.UUID,
                version: int, *, model: str = "percent", rate_bp: int | None = 1000,
                tiers: list | None = None, flat_minor: int | None = None,
                category_rates: dict | None = None, recurring_months: int | None = None,
                window_days: int = 30, click_model: str = "last_click", hold_days: int = 30,
                effective_from: datetime = LONG_AGO) -> int:
    return await db.fetchval(
        "INSERT INTO affiliate_program_terms (program_id, partner_id, version, model,"
        " rate_bp, tiers, flat_minor, category_rates, recurring_months,"
        " attribution_window_days, click_model, hold_days, effective_from, created_by)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8::jsonb, $9, $10, $11, $12, $13,"
        " 'test') RETURNING id", program_id, partner_id, version, model, rate_bp,
        json.dumps(tiers) if tiers is not None else None, flat_minor,
        json.dumps(category_rates or {}), recurring_months, window_days, click_model,
        hold_days, effective_from)


async def enrollment(db: asyncpg.Pool, program_id: uuid.UUID, affiliate_id: uuid.UUID,
                     status: str = "approved") -> tuple[uuid.UUID, str]:
    code = new_key()[:10]
    row = await db.fetchrow(
        "INSERT INTO affiliate_enrollments (program_id, partner_id, affiliate_id, code, status)"
        " SELECT $1, partner_id, $2, $3, $4 FROM affiliate_programs WHERE id = $1"
        " RETURNING id", program_id, affiliate_id, code, status)
    return row["id"], code


async def click(db: asyncpg.Pool, enrollment_id: uuid.UUID, clicked_at: datetime, *,
                ip_hash: str | None = None, sub_id: str | None = None) -> uuid.UUID:
    click_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO affiliate_clicks (click_id, enrollment_id, program_id, partner_id,"
        " clicked_at, ip_hash, sub_id) SELECT $1, id, program_id, partner_id, $2, $3, $4"
        " FROM affiliate_enrollments WHERE id = $5", click_id, clicked_at,
        ip_hash or new_key(), sub_id, enrollment_id)
    return click_id


async def setup(db: asyncpg.Pool, partner_id: uuid.UUID, **program_args
                ) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, str]:
    """A program with one approved affiliate: (program, affiliate, enrollment, code)."""
    program_id = await program(db, partner_id, **program_args)
    affiliate_id = await affiliate(db)
    enrollment_id, code = await enrollment(db, program_id, affiliate_id)
    return program_id, affiliate_id, enrollment_id, code


async def commissions_of(db: asyncpg.Pool, program_id: uuid.UUID) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM affiliate_commissions WHERE program_id = $1"
                          " ORDER BY id", program_id)


def purchase(member: str, total: int = 25000, *, at: datetime = NOW, lines=None,
             **extra) -> dict:
    return {"member": {"id": member}, "order_id": new_key(), "occurred_at": at.isoformat(),
            "total": total, "currency": "PLN", "channel": "online",
            "lines": lines if lines is not None else [], **extra}


async def commission_row(db: asyncpg.Pool, enrollment_id: uuid.UUID, *, amount: int = 1000,
                         status: str = "approved", kind: str = "sale",
                         decided_at: datetime | None = None, sale: int = 10000,
                         refunded: int = 0, occurred_at: datetime | None = None,
                         fraud_reasons: list[str] | None = None,
                         hold_until: datetime | None = None) -> int:
    """A commission written directly, as if it had been through its life already."""
    return await db.fetchval(
        "INSERT INTO affiliate_commissions (program_id, partner_id, enrollment_id,"
        " affiliate_id, terms_id, kind, order_id, currency, sale_minor, refunded_minor,"
        " amount_minor, status, occurred_at, decided_at, fraud_reasons, hold_until)"
        " SELECT e.program_id, e.partner_id, e.id, e.affiliate_id,"
        " (SELECT max(id) FROM affiliate_program_terms t WHERE t.program_id = e.program_id),"
        " $2, $3, 'PLN', $4, $5, $6, $7, $8, $9, $10, $11"
        " FROM affiliate_enrollments e WHERE e.id = $1 RETURNING id",
        enrollment_id, kind, new_key() if kind == "sale" else None, sale, refunded, amount,
        status, occurred_at or decided_at or NOW, decided_at, fraud_reasons or [],
        hold_until)
