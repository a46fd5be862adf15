DROP TRIGGER lot_movements_prepaid_credit ON lot_movements;
DROP TRIGGER lots_prepaid_draw ON lots;
DROP TRIGGER settlement_terms_prepaid ON settlement_terms;
DROP FUNCTION prepaid_credit();
DROP FUNCTION prepaid_draw();
DROP FUNCTION prepaid_open_balance();
DROP FUNCTION settlement_terms_at(uuid, timestamptz);
