"""The earning-rule engine, pure: every rule type, evaluation order, stacking and
stopping, each cap, windows, channels, tier and segment targeting, rounding."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest

from coalition.rules.engine import (
    Basket,
    EventHistory,
    Line,
    RuleUsage,
    RuleVersion,
    Shopper,
    budgeted_rule_ids,
    capped_rule_ids,
    describe,
    evaluate,
    evaluate_event,
    order_key,
    referral_bonus,
)

AT = datetime(2025, 4, 10, 12, tzinfo=UTC)
PARTNER = uuid.UUID(int=7)
PV = Fraction(1, 100)     # one point is worth 0.01 PLN
NOBODY = Shopper(tier=None, segments=frozenset(), first_purchase=False)
_ids = iter(range(1, 10_000))


def rule(type_: str, priority: int = 100, partner: uuid.UUID | None = PARTNER,
         **kw) -> RuleVersion:
    fields = {k: kw.pop(k) for k in list(kw) if k in RuleVersion.__dataclass_fields__}
    n = next(_ids)
    return RuleVersion(rule_id=uuid.UUID(int=n), version=1, partner_id=partner,
                       name=fields.pop("name", f"{type_}-{n}"), type=type_, params=kw,
                       priority=priority, **fields)


def per_pln(**kw) -> RuleVersion:
    return rule("per_amount", points=1, per=100, **kw)


def basket(total: int, *lines: Line, channel: str = "store", at: datetime = AT) -> Basket:
    return Basket(occurred_at=at, total=total, currency="PLN", channel=channel,
                  store_id=None, lines=tuple(lines))


def line(sku: str, amount: int, category: str | None = None, quantity: int = 1) -> Line:
    return Line(sku=sku, category=category, quantity=quantity, unit_price=amount // quantity,
                amount=amount)


def run(rules, b: Basket, shopper: Shopper = NOBODY, budget_left=None):
    return evaluate(rules, b, shopper, budget_left=budget_left or {}, point_value=PV)


def skip_codes(ev) -> dict[str, str]:
    return {s.name: s.code for s in ev.skipped}


# --- rule types ------------------------------------------------------------------------

def test_one_point_per_pln_floors():
    ev = run([per_pln()], basket(12399))
    assert ev.points == 123
    hit = ev.hits[0]
    assert (hit.type, hit.version, hit.funding, hit.capped_by) == ("per_amount", 1, "partner",
                                                                   None)
    assert "123.99 PLN" in hit.explanation and "123 pts" in hit.explanation


def test_points_per_block_of_100_pln():
    r = rule("per_amount", points=5, per=10000)
    assert run([r], basket(34999)).points == 15
    assert run([r], basket(10000)).points == 5


def test_zero_points_is_not_a_hit():
    r = rule("per_amount", points=5, per=10000)
    ev = run([r], basket(9999))
    assert ev.hits == () and ev.points == 0 and skip_codes(ev) == {r.name: "condition"}


def test_minimum_spend_gates_later_rules_only():
    early = rule("threshold_bonus", priority=1, above=1000, points=7)
    gate = rule("min_spend", priority=5, amount=5000, name="min 50")
    base = per_pln(priority=10)
    ev = run([base, gate, early], basket(4999))
    assert ev.points == 7                               # the earlier rule still counts
    codes = skip_codes(ev)
    assert codes["min 50"] == "min_spend" and codes[base.name] == "min_spend"
    assert "min 50" in next(s.reason for s in ev.skipped if s.name == base.name)
    met = run([base, gate], basket(5000))
    assert met.points == 50 and skip_codes(met) == {"min 50": "met"}


def test_threshold_bonus_is_strictly_above():
    r = rule("threshold_bonus", above=20000, points=30)
    assert run([r], basket(20000)).points == 0
    assert run([r], basket(20001)).points == 30
    assert skip_codes(run([r], basket(20000))) == {r.name: "condition"}


def test_sku_and_category_multiplier_adds_extra_at_the_base_rate():
    base = per_pln(priority=10, name="base")
    triple = rule("product", priority=20, skus=["NEW-1"], categories=["paint"],
                  mode="multiplier", multiplier="3")
    b = basket(30050, line("NEW-1", 10050), line("X", 10000, "paint"), line("Y", 10000, "wood"))
    ev = run([triple, base], b)
    # base: 300 pts; the two matching lines hold 200 full PLN: +2 x 200.
    assert [h.points for h in ev.hits] == [300, 400]
    assert "base" in ev.hits[1].explanation


def test_product_multiplier_needs_a_base_rate_before_it():
    triple = rule("product", priority=1, skus=["A"], mode="multiplier", multiplier="2")
    ev = run([triple, per_pln(priority=10)], basket(10000, line("A", 10000)))
    assert ev.points == 100 and skip_codes(ev) == {triple.name: "condition"}


def test_product_fractional_multiplier_floors_on_block_rate():
    base = rule("per_amount", priority=1, points=5, per=10000)
    half = rule("product", priority=2, skus=["A"], mode="multiplier", multiplier="1.5")
    ev = run([base, half], basket(30000, line("A", 30000)))
    assert [h.points for h in ev.hits] == [15, 7]      # 3 blocks x 5 x 0.5 = 7.5 -> 7


def test_product_fixed_points_per_unit():
    r = rule("product", categories=["oil"], mode="fixed", points=25)
    ev = run([r], basket(9000, line("O1", 6000, "oil", quantity=3), line("Z", 3000)))
    assert ev.points == 75
    assert skip_codes(run([r], basket(3000, line("Z", 3000)))) == {r.name: "condition"}


def test_first_purchase_bonus():
    r = rule("first_purchase", points=40)
    first = Shopper(tier=None, segments=frozenset(), first_purchase=True)
    assert run([r], basket(100), first).points == 40
    assert run([r], basket(100)).points == 0


def test_cashback_exact_fraction_floor():
    r = rule("cashback", basis_points=250)                 # 2.5 %
    # 2.5 % of 123.45 PLN = 3.08625 PLN = 308.625 points at 0.01 PLN -> 308
    ev = run([r], basket(12345))
    assert ev.points == 308
    assert "3.08 PLN at 0.01 PLN per point" in ev.hits[0].explanation
    # A point worth 0.03 PLN: 3.08625 / 0.03 = 102.875 -> 102
    assert evaluate([r], basket(12345), NOBODY, budget_left={},
                    point_value=Fraction(3, 100)).points == 102


def test_cashback_on_matching_lines_only():
    r = rule("cashback", basis_points=1000, skus=["A"])
    assert run([r], basket(20000, line("A", 5000), line("B", 15000))).points == 500
    assert skip_codes(run([r], basket(100, line("B", 100)))) == {r.name: "condition"}


def test_tier_multiplier_on_points_before_it():
    base = per_pln(priority=10)
    bonus = rule("threshold_bonus", priority=20, above=20000, points=30)
    vip = rule("multiplier", priority=900, partner=None, multiplier="1.5", tiers=frozenset({"vip"}),
               funding="coalition")
    vip_shopper = Shopper(tier="vip", segments=frozenset(), first_purchase=False)
    ev = run([vip, bonus, base], basket(21500), vip_shopper)
    assert [h.points for h in ev.hits] == [215, 30, 122]   # (215 + 30) x 0.5 = 122.5 -> 122
    assert ev.hits[-1].funding == "coalition"
    assert ev.funded("partner") == 245 and ev.funded("coalition") == 122
    plain = run([vip, bonus, base], basket(21500))
    assert plain.points == 245 and skip_codes(plain)[vip.name] == "tier"


def test_multiplier_with_nothing_before_it_is_skipped():
    m = rule("multiplier", priority=1, multiplier="2")
    ev = run([m, per_pln(priority=2)], basket(1000))
    assert ev.points == 10 and skip_codes(ev) == {m.name: "condition"}


def test_purchase_evaluation_ignores_event_and_referral_rules():
    ev = run([per_pln(), rule("event", event_type="signup", points=50, frequency="once"),
              rule("referral", points=100)], basket(1000))
    assert ev.points == 10 and ev.skipped == ()


# --- events and referrals ----------------------------------------------------------------

@pytest.mark.parametrize("frequency,history,earns", [
    ("unlimited", EventHistory(ever=9, year=9, month=9, day=9), True),
    ("once", EventHistory(), True),
    ("once", EventHistory(ever=1), False),
    ("yearly", EventHistory(ever=3, year=0), True),
    ("yearly", EventHistory(ever=3, year=1), False),
    ("monthly", EventHistory(ever=3, year=2, month=0), True),
    ("monthly", EventHistory(ever=3, year=2, month=1), False),
    ("daily", EventHistory(ever=3, year=3, month=3, day=0), True),
    ("daily", EventHistory(ever=3, year=3, month=3, day=1), False),
])
def test_event_frequency(frequency, history, earns):
    r = rule("event", event_type="webinar", points=20, frequency=frequency, partner=None)
    ev = evaluate_event([r], "webinar", AT, NOBODY, budget_left={}, history=history)
    assert ev.points == (20 if earns else 0)
    if not earns:
        assert skip_codes(ev) == {r.name: "frequency"}


def test_event_only_matching_type_and_still_targeted_and_capped():
    signup = rule("event", event_type="signup", points=50, frequency="once")
    survey = rule("event", event_type="survey", points=30, frequency="unlimited",
                  per_member_day_cap=40)
    vip_only = rule("event", event_type="survey", points=5, frequency="unlimited",
                    tiers=frozenset({"vip"}))
    used = Shopper(tier=None, segments=frozenset(), first_purchase=False,
                   usage={survey.rule_id: RuleUsage(day=30)})
    ev = evaluate_event([signup, survey, vip_only, per_pln()], "survey", AT, used,
                        budget_left={})
    assert ev.points == 10 and ev.hits[0].capped_by == "per_member_day"
    assert skip_codes(ev) == {vip_only.name: "tier"}


def test_event_window():
    r = rule("event", event_type="fair", points=20, frequency="unlimited",
             starts_at=AT + timedelta(days=1))
    ev = evaluate_event([r], "fair", AT, NOBODY, budget_left={})
    assert skip_codes(ev) == {r.name: "window"}


def test_referral_bonus_for_the_referrer():
    r = rule("referral", points=100, partner=None, funding="coalition")
    ev = referral_bonus([r, per_pln()], AT, NOBODY, budget_left={})
    assert ev.points == 100 and ev.hits[0].funding == "coalition"
    budgeted = rule("referral", points=100, budget=1000)
    capped = referral_bonus([budgeted], AT, NOBODY, budget_left={budgeted.rule_id: 60})
    assert capped.points == 60 and capped.hits[0].capped_by == "budget"


# --- order, stacking, stop ---------------------------------------------------------------

def test_order_is_priority_then_partner_before_coalition_then_rule_id():
    a = rule("threshold_bonus", priority=5, partner=None, above=0, points=1, name="coal-5")
    b = rule("threshold_bonus", priority=5, above=0, points=1, name="partner-5")
    c = rule("threshold_bonus", priority=1, partner=None, above=0, points=1, name="coal-1")
    d = rule("threshold_bonus", priority=5, above=0, points=1, name="partner-5b")
    rules = [a, b, c, d]
    for _ in range(5):
        random.shuffle(rules)
        assert [h.name for h in run(rules, basket(100)).hits] == [
            "coal-1", "partner-5", "partner-5b", "coal-5"]
    assert sorted(rules, key=order_key)[0] is c


def test_rules_stack_by_default():
    ev = run([per_pln(priority=1), rule("threshold_bonus", priority=2, above=20000, points=30),
              rule("first_purchase", priority=3, points=10)],
             basket(25000), Shopper(tier=None, segments=frozenset(), first_purchase=True))
    assert [h.points for h in ev.hits] == [250, 30, 10] and ev.points == 290


def test_stop_later_rules_only_when_it_awards():
    stop = rule("product", priority=5, skus=["PROMO"], mode="fixed", points=100,
                stops_later_rules=True, name="promo")
    later = per_pln(priority=10)
    earlier = rule("first_purchase", priority=1, points=5)
    first = Shopper(tier=None, segments=frozenset(), first_purchase=True)
    ev = run([later, stop, earlier], basket(5000, line("PROMO", 5000)), first)
    assert [h.points for h in ev.hits] == [5, 100]
    assert skip_codes(ev) == {later.name: "stopped"}
    assert "promo" in ev.skipped[0].reason
    # The stopping rule did not fire: later rules go on.
    ev = run([later, stop], basket(5000, line("OTHER", 5000)))
    assert ev.points == 50 and skip_codes(ev) == {"promo": "condition"}


def test_combination_order_changes_multiplier_result():
    base, bonus = per_pln(priority=10), rule("threshold_bonus", priority=30, above=0, points=40)
    mult_between = rule("multiplier", priority=20, multiplier="2")
    assert run([base, bonus, mult_between], basket(10000)).points == 100 + 100 + 40
    mult_last = rule("multiplier", priority=40, multiplier="2")
    assert run([base, bonus, mult_last], basket(10000)).points == (100 + 40) * 2


# --- targeting ---------------------------------------------------------------------------

def test_active_window_start_inclusive_end_exclusive():
    r = per_pln(starts_at=AT, ends_at=AT + timedelta(days=1))
    assert run([r], basket(1000, at=AT)).points == 10
    assert run([r], basket(1000, at=AT - timedelta(seconds=1))).points == 0
    assert run([r], basket(1000, at=AT + timedelta(days=1))).points == 0
    assert skip_codes(run([r], basket(1000, at=AT + timedelta(days=1)))) == {r.name: "window"}


def test_channels():
    r = per_pln(channels=frozenset({"online", "mobile"}))
    assert run([r], basket(1000, channel="online")).points == 10
    ev = run([r], basket(1000, channel="store"))
    assert ev.points == 0 and skip_codes(ev) == {r.name: "channel"}


def test_tier_and_segment_targeting():
    seg, other = uuid.uuid4(), uuid.uuid4()
    r = per_pln(tiers=frozenset({"vip", "gold"}), segments=frozenset({seg, other}))
    both = Shopper(tier="gold", segments=frozenset({seg}), first_purchase=False)
    assert run([r], basket(1000), both).points == 10
    wrong_tier = Shopper(tier="standard", segments=frozenset({seg}), first_purchase=False)
    assert skip_codes(run([r], basket(1000), wrong_tier)) == {r.name: "tier"}
    no_segment = Shopper(tier="vip", segments=frozenset({uuid.uuid4()}), first_purchase=False)
    assert skip_codes(run([r], basket(1000), no_segment)) == {r.name: "segment"}
    lone = per_pln(segments=frozenset({seg}))
    assert skip_codes(run([lone], basket(1000))) == {lone.name: "segment"}


# --- caps --------------------------------------------------------------------------------

def test_per_order_cap():
    r = per_pln(per_order_cap=100)
    ev = run([r], basket(50000))
    assert ev.points == 100 and ev.hits[0].capped_by == "per_order"
    assert "per-order cap" in ev.hits[0].explanation
    assert run([r], basket(5000)).hits[0].capped_by is None


def test_per_member_day_and_month_caps():
    r = per_pln(per_member_day_cap=300, per_member_month_cap=1000)
    def shopper(day, month):
        return Shopper(tier=None, segments=frozenset(), first_purchase=False,
                       usage={r.rule_id: RuleUsage(day=day, month=month)})
    assert run([r], basket(50000), shopper(0, 0)).points == 300
    assert run([r], basket(50000), shopper(0, 0)).hits[0].capped_by == "per_member_day"
    assert run([r], basket(50000), shopper(250, 250)).points == 50
    assert run([r], basket(50000), shopper(0, 900)).points == 100
    assert run([r], basket(50000), shopper(0, 900)).hits[0].capped_by == "per_member_month"
    full = run([r], basket(50000), shopper(300, 300))
    assert full.points == 0 and skip_codes(full) == {r.name: "cap"}
    # Another rule's usage does not count against this one.
    other = Shopper(tier=None, segments=frozenset(), first_purchase=False,
                    usage={uuid.uuid4(): RuleUsage(day=300, month=1000)})
    assert run([r], basket(1000), other).points == 10


def test_campaign_budget():
    r = per_pln(budget=10_000)
    assert run([r], basket(50000)).points == 500                 # untouched budget
    ev = run([r], basket(50000), budget_left={r.rule_id: 120})
    assert ev.points == 120 and ev.hits[0].capped_by == "budget"
    spent = run([r], basket(50000), budget_left={r.rule_id: 0})
    assert spent.points == 0 and skip_codes(spent) == {r.name: "budget"}
    assert budgeted_rule_ids([r, per_pln()]) == [r.rule_id]
    day, month = per_pln(per_member_day_cap=1), per_pln(per_member_month_cap=1)
    assert capped_rule_ids([r, day, month]) == [day.rule_id, month.rule_id]


def test_a_capped_rule_still_feeds_the_multiplier_with_its_capped_points():
    base = per_pln(priority=1, per_order_cap=100)
    m = rule("multiplier", priority=2, multiplier="2")
    assert run([base, m], basket(50000)).points == 200


# --- breakdown, determinism --------------------------------------------------------------

def test_breakdown_lists_hits_and_skips_json_ready():
    r1, r2 = per_pln(priority=1), rule("threshold_bonus", priority=2, above=90000, points=1)
    rows = run([r1, r2], basket(1000)).breakdown()
    assert rows[0]["points"] == 10 and rows[0]["rule_id"] == str(r1.rule_id)
    assert rows[1]["skipped"] == "condition" and rows[1]["points"] == 0


def test_all_integer_and_deterministic_over_random_baskets():
    rng = random.Random(4)
    rules = [per_pln(priority=10), rule("cashback", priority=20, basis_points=333),
             rule("product", priority=30, categories=["c1"], mode="multiplier",
                  multiplier="1.25"),
             rule("multiplier", priority=90, multiplier="1.5", tiers=frozenset({"vip"}))]
    vip = Shopper(tier="vip", segments=frozenset(), first_purchase=False)
    for _ in range(200):
        lines = tuple(line(f"S{i}", rng.randint(1, 50000), rng.choice(["c1", "c2"]))
                      for i in range(rng.randint(0, 20)))
        b = basket(sum(ln.amount for ln in lines), *lines)
        first, second = run(rules, b, vip), run(list(reversed(rules)), b, vip)
        assert first == second
        assert all(isinstance(h.points, int) and h.points > 0 for h in first.hits)


def test_describe_every_type():
    samples = [per_pln(), rule("min_spend", amount=5000),
               rule("threshold_bonus", above=20000, points=30),
               rule("product", skus=["A"], mode="multiplier", multiplier="2"),
               rule("product", categories=["c"], mode="fixed", points=3),
               rule("first_purchase", points=10), rule("cashback", basis_points=200),
               rule("multiplier", multiplier="1.5"),
               rule("event", event_type="signup", points=50, frequency="once"),
               rule("referral", points=100)]
    texts = [describe(r) for r in samples]
    assert texts[0] == "1 pt per 1.00 PLN" and texts[6] == "2% cashback in points"
    assert len(set(texts)) == len(texts)
