"""A partner's payout and billing details, as entered in the partner console: checked
field by field (every error at once, for the form), then saved under the partner's own
row-level-security scope."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coalition.bank import check_account
from coalition.errors import DomainError

ACCOUNT_ID = re.compile(r"^acct_[A-Za-z0-9]{6,250}$")      # within the column's 255
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def validate(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(values to store, {field: error})."""
    errors: dict[str, str] = {}
    method = (form.get("method") or "").strip()
    values: dict[str, Any] = {"method": method or None, "account_holder": None, "iban": None,
                              "bic": None, "stripe_account_id": None}
    email = (form.get("billing_email") or "").strip()
    if email and (not EMAIL.match(email) or len(email) > 320):
        errors["billing_email"] = "Enter an email address, such as billing@brand.example."
    values["billing_email"] = email or None
    if method == "sepa":
        holder = " ".join((form.get("account_holder") or "").split())
        if not holder:
            errors["account_holder"] = "Enter the account holder's name."
        try:
            # A placeholder holder when it is missing, so the bank fields are still checked.
            account = check_account(holder or "-", form.get("iban", ""), form.get("bic", ""))
            values.update(account_holder=holder, iban=account.iban, bic=account.bic)
        except DomainError as exc:
            errors[exc.field or "iban"] = exc.detail
    elif method == "stripe_connect":
        account_id = (form.get("stripe_account_id") or "").strip()
        if not ACCOUNT_ID.match(account_id):
            errors["stripe_account_id"] = ("Enter your Stripe connected account id, such as"
                                           " acct_1A2b3C4d5E6f7G8h.")
        values["stripe_account_id"] = account_id
    else:
        errors["method"] = "Choose how you are paid: Stripe Connect or bank transfer (SEPA)."
    return values, errors


async def save(session: AsyncSession, partner_id: uuid.UUID, values: dict[str, Any],
               actor: str) -> None:
    """Upsert the partner's details; the Stripe customer id is kept."""
    await session.execute(text(
        "INSERT INTO partner_payout_details (partner_id, method, account_holder, iban, bic,"
        " stripe_account_id, billing_email, updated_by, updated_at) VALUES (:p, :method,"
        " :account_holder, :iban, :bic, :stripe_account_id, :billing_email, :actor, now())"
        " ON CONFLICT (partner_id) DO UPDATE SET method = EXCLUDED.method,"
        " account_holder = EXCLUDED.account_holder, iban = EXCLUDED.iban, bic = EXCLUDED.bic,"
        " stripe_account_id = EXCLUDED.stripe_account_id,"
        " billing_email = EXCLUDED.billing_email, updated_by = EXCLUDED.updated_by,"
        " updated_at = now()"), {"p": partner_id, "actor": actor, **values})


async def load(session: AsyncSession, partner_id: uuid.UUID) -> dict[str, Any] | None:
    row = (await session.execute(text(
        "SELECT * FROM partner_payout_details WHERE partner_id = :p"),
        {"p": partner_id})).mappings().first()
    return dict(row) if row else None
