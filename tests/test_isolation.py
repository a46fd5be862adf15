"""Tenant isolation: every route of the partner API, tried by partner B against partner
A's resources, answers 403 or 404 and leaks none of A's data."""

import re

from tests.helpers import new_key


async def test_every_api_route_refuses_another_partners_resources(client, partner, other_partner):
    member = await partner.enroll(partner_customer_id="A-SECRET-CUSTOMER")
    card = (await partner.get(f"/api/v1/members/{member}")).json()["card_number"]
    earn = (await partner.earn(member, 90, order_id="A-SECRET-ORDER",
                               metadata={"a": "A-SECRET-META"})).json()
    redemption = (await partner.redeem(member, 10, order_id="A-SECRET-ORDER-2")).json()
    secrets = ["A-SECRET", card]

    schema = (await client.get("/schema/openapi.json")).json()
    ids = {"member_id": member, "transaction_id": str(earn["id"])}
    bodies = {
        "/api/v1/members": {"email": "isolation-b@example.com",
                            "partner_customer_id": "A-SECRET-CUSTOMER"},
        "/api/v1/earn": {"member_id": member, "points": 5},
        "/api/v1/redemptions": {"member_id": member, "points": 5},
        "/api/v1/adjustments": {"member_id": member, "points": -5, "reason": "Take it"},
    }
    tried = 0
    for template, operations in schema["paths"].items():
        if not template.startswith("/api/v1"):
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], template)
        for method in operations:
            tried += 1
            if method == "get":
                response = await other_partner.get(path)
                if template == "/api/v1/members":
                    for query in ({"partner_customer_id": "A-SECRET-CUSTOMER"},
                                  {"card_number": card}):
                        listed = await other_partner.get(path, params=query)
                        assert listed.status_code == 200 and listed.json()["items"] == []
                    continue
            else:
                response = await other_partner.client.request(
                    method.upper(), path, json=bodies.get(template, {}),
                    headers={**other_partner.auth, "Idempotency-Key": new_key()})
                if template == "/api/v1/members":
                    # B may enrol its own customer with the same customer id; it gets a new
                    # member, never A's.
                    assert response.status_code == 201
                    assert response.json()["id"] != member
                    continue
            assert response.status_code in (403, 404), (method, template, response.text)
            assert not any(secret in response.text for secret in secrets), (method, template)
    assert tried >= 7
    reversal = await other_partner.post(f"/api/v1/transactions/{redemption['id']}/reversal")
    assert reversal.status_code == 404
    assert (await partner.balance(member))["available"] == 80
