"""B2B company accounts (P11): one company member, one wallet, several person logins.

A company is a member of kind "company" with its name and tax id (Polish NIP or EU VAT
id, checked with python-stdnum). Its people are portal logins (users of kind member)
attached to the company's member id, each with a company_role: "buyer" sees the balance
and history and spends the shared points; "admin" also invites, re-roles and removes
people. A company always keeps at least one active admin. Companies are created by a
partner through the enrol API (kind "company") or by an operator on /operator/companies,
who also invites the first admin. The people (logins) are tenants' (tenants/companies.py);
the company member and its profile are here."""

from __future__ import annotations

import re

from stdnum.eu import vat
from stdnum.pl import nip

from coalition.errors import DomainError
from coalition.members import Profile

COMPANY_ROLES = ("buyer", "admin")


def normalize_tax_id(value: str) -> str | None:
    """A valid Polish NIP (10 digits) or EU VAT id (country prefix), compacted."""
    compact = re.sub(r"[\s.-]", "", value).upper()
    if compact.isdigit() and nip.is_valid(compact):
        return nip.compact(compact)
    if compact.startswith("PL") and nip.is_valid(compact[2:]):
        return nip.compact(compact[2:])
    if len(compact) > 2 and compact[:2].isalpha() and vat.is_valid(compact):
        return vat.compact(compact)
    return None


def company_profile(company_name: str | None, tax_id: str | None) -> Profile:
    """The enrolment profile of a company, or a 400 naming the bad field."""
    name = (company_name or "").strip()
    if not name or len(name) > 200:
        raise DomainError("validation-error", "Company name needed",
                          "A company member needs its company name (at most 200 characters).",
                          status=400, field="company_name")
    compact = normalize_tax_id(tax_id or "")
    if compact is None:
        raise DomainError("validation-error", "Invalid tax id",
                          "Give a valid Polish NIP (10 digits) or an EU VAT id such as"
                          " DE136695976.", status=400, field="tax_id")
    return Profile(kind="company", company_name=name, tax_id=compact)
