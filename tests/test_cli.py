"""The `coalition` command against the test database: partners, verify, import, demo,
worker. Commands run in a subprocess exactly as an operator would run them."""

import csv
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers import new_partner


def coalition(database_url, *args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COALITION_DATABASE_URL": database_url.raw,
           "COALITION_LOG_LEVEL": "WARNING", **env_vars}
    return subprocess.run([sys.executable, "-m", "web", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_partners_create_json_gives_working_credentials(database_url):
    name = f"Stacja {uuid.uuid4().hex[:6]}"
    result = coalition(database_url, "partners", "create", "--name", name, "--json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert set(created) == {"partner_id", "client_id", "client_secret"}


async def test_created_partner_can_get_a_token(client, database_url):
    name = f"Apteka {uuid.uuid4().hex[:6]}"
    result = coalition(database_url, "partners", "create", "--name", name, "--json")
    created = json.loads(result.stdout)
    token = await client.post("/oauth/token", data={"grant_type": "client_credentials"},
                              auth=(created["client_id"], created["client_secret"]))
    assert token.status_code == 200


async def test_ledger_verify_clean_then_reports_tampering(database_url, partner, db):
    member = await partner.enroll()
    await partner.earn(member, 30)
    clean = coalition(database_url, "ledger", "verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "clean" in clean.stdout

    await db.execute("UPDATE accounts SET balance = balance + 3 WHERE member_id = $1", member)
    try:
        broken = coalition(database_url, "ledger", "verify")
        assert broken.returncode == 1
        assert "cached balance" in broken.stdout and member in broken.stdout
    finally:
        await db.execute("UPDATE accounts SET balance = balance - 3 WHERE member_id = $1", member)


@pytest.fixture
async def import_setup(client):
    partner = await new_partner(client, "Import Brand")
    members = []
    for i in range(3):
        member_id = await partner.enroll(partner_customer_id=f"C{i}")
        card = (await partner.get(f"/api/v1/members/{member_id}")).json()["card_number"]
        members.append((member_id, card))
    slug = await client.app.state.pool.fetchval("SELECT slug FROM partners WHERE id = $1",
                                                partner.partner_id)
    return partner, slug, members


async def test_import_posts_good_rows_reports_bad_ones_and_is_rerunnable(
        import_setup, database_url, tmp_path: Path):
    partner, slug, members = import_setup
    path = tmp_path / "tx.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["card_number", "customer_id", "points", "order_reference",
                         "occurred_at"])
        writer.writerow([members[0][1], "", "100", "O-1", "2026-10-01T10:00:00+02:00"])
        writer.writerow(["", "C1", "40", "O-2", "2026-10-02 12:00"])
        writer.writerow(["", "C2", "0", "O-3", "2026-10-02T12:00:00"])          # line 4
        writer.writerow(["", "nobody", "5", "O-4", "2026-10-02T12:00:00"])      # line 5
        writer.writerow(["7000000000000000", "", "5", "O-5", "2026-10-02"])      # line 6
        writer.writerow(["", "C2", "5", "O-1", "2026-10-02T12:00:00"])          # line 7
        writer.writerow(["", "C2", "5", "O-6", "yesterday"])                    # line 8
        writer.writerow(["", "C2", "25", "O-7", "2026-10-03T08:00:00Z"])
    first = coalition(database_url, "import", "transactions", str(path), "--partner", slug)
    assert first.returncode == 2, first.stderr
    lines = first.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("line")] == [
        "line 4", "line 5", "line 6", "line 7", "line 8"]
    assert "unknown member" in first.stdout
    assert "3 posted (165 points)" in first.stdout
    assert (await partner.balance(members[0][0]))["available"] == 100
    assert (await partner.balance(members[1][0]))["available"] == 40
    assert (await partner.balance(members[2][0]))["available"] == 25

    again = coalition(database_url, "import", "transactions", str(path), "--partner", slug)
    assert "0 posted" in again.stdout and "3 already imported" in again.stdout
    assert (await partner.balance(members[0][0]))["available"] == 100
    history = (await partner.get(f"/api/v1/members/{members[1][0]}/transactions")).json()
    assert history["items"][0]["order_id"] == "O-2"
    assert history["items"][0]["occurred_at"].startswith("2026-10-02T10:00:00")  # Warsaw → UTC

    changed = tmp_path / "changed.csv"
    changed.write_text("customer_id,points,order_reference,occurred_at\n"
                       "C1,41,O-2,2026-10-02T12:00:00\n")
    conflict = coalition(database_url, "import", "transactions", str(changed), "--partner", slug)
    assert conflict.returncode == 2
    assert "imported before" in conflict.stdout
    assert coalition(database_url, "ledger", "verify").returncode == 0


def test_import_refuses_bad_header_and_unknown_partner(database_url, tmp_path: Path):
    path = tmp_path / "bad.csv"
    path.write_text("who,points\nx,1\n")
    bad_header = coalition(database_url, "import", "transactions", str(path), "--partner", "x")
    assert bad_header.returncode == 1
    path.write_text("customer_id,points,order_reference,occurred_at\n")
    unknown = coalition(database_url, "import", "transactions", str(path), "--partner", "nope")
    assert unknown.returncode == 1 and "no partner" in unknown.stderr


def test_worker_once_purges_expired_records(database_url):
    result = coalition(database_url, "worker", "--once")
    assert result.returncode == 0, result.stderr


async def test_oidc_rotate_key_publishes_a_new_signing_key(database_url, settings, client):
    result = coalition(database_url, "oidc", "rotate-key",
                       COALITION_DATA_DIR=str(settings.data_dir))
    assert result.returncode == 0, result.stderr
    kid = result.stdout.split()[-1]
    jwks = (await client.get("/oauth/jwks")).json()
    assert kid in [key["kid"] for key in jwks["keys"]]
    assert len(jwks["keys"]) >= 2        # the previous key stays published
