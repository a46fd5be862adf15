async def test_health(client):
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


async def test_earn_and_redeem(partner):
    member = await partner.enroll()
    earned = await partner.earn(member, 100, order_id="A-1")
    assert earned.status_code == 201, earned.text
    assert earned.json()["balance"] == {"available": 100}
    redeemed = await partner.redeem(member, 30)
    assert redeemed.status_code == 201, redeemed.text
    assert (await partner.balance(member))["available"] == 70
