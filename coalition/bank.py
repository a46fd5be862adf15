"""Bank account checks for payouts (schwifty): a valid IBAN, and a BIC that is well formed
and of the IBAN's country. Errors name the field, so forms and API problems can show them
next to it. Shared by settlement (partner payouts, SEPA files) and the affiliates (their
payout details), hence here, below both."""

from __future__ import annotations

from dataclasses import dataclass

from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException

from coalition.errors import DomainError


@dataclass(frozen=True)
class BankAccount:
    holder: str
    iban: str    # compact, upper case
    bic: str     # 8 or 11 characters, upper case


def invalid(field: str, detail: str) -> DomainError:
    return DomainError("validation-error", "Invalid bank details", detail, status=400,
                       field=field)


def check_account(holder: str, iban: str, bic: str, *, prefix: str = "") -> BankAccount:
    """The account as stored, or a 400 problem naming the first bad field (`prefix` is
    put before the field name, e.g. "debtor_")."""
    holder = " ".join((holder or "").split())
    if not holder:
        raise invalid(f"{prefix}account_holder", "Enter the account holder's name.")
    if len(holder) > 70:   # pain.001 limits a party's name to 70 characters
        raise invalid(f"{prefix}account_holder", "The account holder is at most 70 characters.")
    try:
        parsed_iban = IBAN(iban or "")
    except (SchwiftyException, ValueError) as exc:
        raise invalid(f"{prefix}iban", f"Enter a valid IBAN ({exc}).") from exc
    if not (bic or "").strip():
        # A BIC is optional in SEPA, but we derive it when the IBAN's bank is known.
        derived = parsed_iban.bic
        if derived is None:
            raise invalid(f"{prefix}bic", "Enter the bank's BIC; it cannot be derived from"
                          " this IBAN.")
        parsed_bic = derived
    else:
        try:
            parsed_bic = BIC(bic)
        except (SchwiftyException, ValueError) as exc:
            raise invalid(f"{prefix}bic", f"Enter a valid BIC ({exc}).") from exc
    if parsed_bic.country_code != parsed_iban.country_code:
        raise invalid(f"{prefix}bic", f"The BIC is of country {parsed_bic.country_code} but"
                      f" the IBAN of {parsed_iban.country_code}.")
    return BankAccount(holder, parsed_iban.compact, str(parsed_bic.compact))
