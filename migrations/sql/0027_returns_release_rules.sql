-- A return gives back what the returned part of the order used of its rules: the
-- member's day and month caps and the campaign budgets. Each rule that fired on the
-- purchase is released by floor(its points x returned / total), counted over all the
-- order's returns so far (so the sum never rounds twice); a full return releases
-- everything, a partial one may release a point or two less than it reverses.
-- The release is a negative rule hit, dated like the purchase so that it counts in the
-- same day and month, under the return's entry (the purchase's when the return took
-- back no points). Runs inside the return's transaction, before purchase_return moves
-- the order's returned_total on.
CREATE FUNCTION purchase_return_release_rules() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_p record;
BEGIN
    SELECT total, returned_total, entry_id, occurred_at INTO v_p
      FROM purchases WHERE id = NEW.purchase_id;
    IF v_p.entry_id IS NULL OR v_p.total = 0 THEN
        RETURN NULL;
    END IF;
    WITH released AS (
        INSERT INTO rule_hits (entry_id, partner_id, member_id, rule_id, rule_version, points,
                               funding, occurred_at)
        SELECT coalesce(NEW.entry_id, v_p.entry_id), partner_id, member_id, rule_id,
               rule_version, -points_back, funding, v_p.occurred_at
          FROM (SELECT h.*,
                       floor(h.points::numeric * (v_p.returned_total + NEW.amount) / v_p.total)
                       - floor(h.points::numeric * v_p.returned_total / v_p.total) AS points_back
                  FROM rule_hits h WHERE h.entry_id = v_p.entry_id AND h.points > 0) hits
         WHERE points_back > 0
        RETURNING rule_id, -points AS points)
    UPDATE earning_rules r SET budget_used = greatest(r.budget_used - back.points, 0)
      FROM (SELECT rule_id, sum(points) AS points FROM released GROUP BY rule_id) back
     WHERE r.id = back.rule_id AND r.budget IS NOT NULL;
    RETURN NULL;
END $$;

CREATE TRIGGER purchase_returns_release_rules AFTER INSERT ON purchase_returns
    FOR EACH ROW EXECUTE FUNCTION purchase_return_release_rules();
