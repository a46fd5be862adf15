"""Small fixtures of the payouts and dashboard tests, written straight to the tables
(programs, enrollments, clicks and commissions are other helpers' code)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from coalition import clock
from tenants.accounts import create_user

PASSWORD = "affiliate secret 12"
PAST = datetime(2020, 1, 1, tzinfo=UTC)


async def new_affiliate(db: asyncpg.Pool, method: str | None = None, **fields) -> uuid.UUID:
    values = {"kind": "person", "name": f"Affiliate {uuid.uuid4().hex[:6]}",
              "email": f"aff-{uuid.uuid4().hex[:10]}@affiliates.example",
              "payout_method": method, **fields}
    columns = ", ".join(values)
    marks = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    return await db.fetchval(f"INSERT INTO affiliates ({columns}) VALUES ({marks})"
                             " RETURNING id", *values.values())


async def affiliate_login(app, affiliate_id: uuid.UUID) -> str:
    """A verified login of kind 'affiliate' for the affiliate; returns its email."""
    email = f"login-{uuid.uuid4().hex[:10]}@affiliates.example"
    async with app.state.sessionmaker() as session:
        await create_user(session, email, "affiliate", affiliate_id=affiliate_id,
                          password=PASSWORD, verified=True)
        await session.commit()
    return email


async def new_program(db: asyncpg.Pool, partner_id: uuid.UUID, *, currency: str = "PLN",
                      min_payout: int = 5000, name: str | None = None, rate_bp: int = 500,
                      hold_days: int = 30, category_rates: dict[str, int] | None = None
                      ) -> tuple[uuid.UUID, int]:
    """A program with one terms version in force since 2020: (program id, terms id)."""
    program = await db.fetchval(
        "INSERT INTO affiliate_programs (partner_id, name, landing_url, currency)"
        " VALUES ($1, $2, 'https://shop.example/', $3) RETURNING id",
        partner_id, name or f"Program {uuid.uuid4().hex[:6]}", currency)
    terms = await add_terms(db, program, partner_id, 1, min_payout=min_payout,
                            rate_bp=rate_bp, hold_days=hold_days, effective_from=PAST,
                            category_rates=category_rates)
    return program, terms


async def add_terms(db: asyncpg.Pool, program: uuid.UUID, partner_id: uuid.UUID,
                    version: int, *, min_payout: int, rate_bp: int = 500,
                    hold_days: int = 30, effective_from: datetime,
                    category_rates: dict[str, int] | None = None) -> int:
    return await db.fetchval(
        "INSERT INTO affiliate_program_terms (program_id, partner_id, version, model,"
        " rate_bp, hold_days, min_payout_minor, effective_from, created_by, category_rates)"
        " VALUES ($1, $2, $3, 'percent', $4, $5, $6, $7, 'test', $8::jsonb) RETURNING id",
        program, partner_id, version, rate_bp, hold_days, min_payout, effective_from,
        json.dumps(category_rates or {}))


async def enroll(db: asyncpg.Pool, program: uuid.UUID, affiliate: uuid.UUID,
                 status: str = "approved") -> tuple[uuid.UUID, str]:
    code = f"c{uuid.uuid4().hex[:10]}"
    enrollment = await db.fetchval(
        "INSERT INTO affiliate_enrollments (program_id, partner_id, affiliate_id, code,"
        " status) SELECT id, partner_id, $2, $3, $4 FROM affiliate_programs WHERE id = $1"
        " RETURNING id", program, affiliate, code, status)
    return enrollment, code


async def commission(db: asyncpg.Pool, enrollment: uuid.UUID, amount: int, *,
                     status: str = "approved", kind: str | None = None, sale: int = 0,
                     order_id: str | None = None, at: datetime | None = None) -> int:
    kind = kind or ("clawback" if amount < 0 else "sale")
    if kind == "sale" and order_id is None:
        order_id = f"o-{uuid.uuid4().hex[:10]}"
    return await db.fetchval(
        "INSERT INTO affiliate_commissions (program_id, partner_id, enrollment_id,"
        " affiliate_id, terms_id, kind, order_id, currency, sale_minor, amount_minor,"
        " status, occurred_at)"
        " SELECT e.program_id, e.partner_id, e.id, e.affiliate_id,"
        " (SELECT max(t.id) FROM affiliate_program_terms t WHERE t.program_id = e.program_id),"
        " $2, $3, p.currency, $4, $5, $6, $7 FROM affiliate_enrollments e"
        " JOIN affiliate_programs p ON p.id = e.program_id WHERE e.id = $1 RETURNING id",
        enrollment, kind, order_id, sale, amount, status,
        at or clock.now() - timedelta(days=40))


async def clicks(db: asyncpg.Pool, enrollment: uuid.UUID, count: int, *,
                 at: datetime | None = None, sub_id: str | None = None) -> None:
    await db.execute(
        "INSERT INTO affiliate_clicks (click_id, enrollment_id, program_id, partner_id,"
        " clicked_at, ip_hash, sub_id) SELECT gen_random_uuid(), e.id, e.program_id,"
        " e.partner_id, $2, md5(random()::text), $3 FROM affiliate_enrollments e,"
        " generate_series(1, $4) WHERE e.id = $1",
        enrollment, at or clock.now() - timedelta(days=3), sub_id, count)


async def wallet_member(db: asyncpg.Pool) -> uuid.UUID:
    """A member with a wallet, linked to no partner."""
    from coalition.cards import new_card_number

    return await db.fetchval(
        "WITH m AS (INSERT INTO members (email, card_number) VALUES ($1, $2) RETURNING id)"
        " INSERT INTO accounts (code, kind, member_id, balance, lower_bound)"
        " SELECT 'member:' || id, 'member_wallet', id, 0, 0 FROM m RETURNING member_id",
        f"{uuid.uuid4().hex}@wallet.example", new_card_number())


async def affiliate_payout_and_creative(db: asyncpg.Pool, partner_id: uuid.UUID
                                        ) -> tuple[int, int]:
    """A paid payout and an active creative in a program of the partner (for the
    isolation walk)."""
    affiliate = await new_affiliate(db, "sepa")
    program, _ = await new_program(db, partner_id)
    enrollment, _ = await enroll(db, program, affiliate)
    payout = await db.fetchval(
        "INSERT INTO affiliate_payouts (enrollment_id, affiliate_id, program_id, partner_id,"
        " method, currency, amount_minor, status) VALUES ($1, $2, $3, $4, 'sepa', 'PLN',"
        " 5000, 'paid') RETURNING id", enrollment, affiliate, program, partner_id)
    creative = await db.fetchval(
        "INSERT INTO affiliate_creatives (program_id, partner_id, title, filename,"
        " content_type, content) VALUES ($1, $2, 'Banner', 'b.png', 'image/png', '\\x00')"
        " RETURNING id", program, partner_id)
    return payout, creative
