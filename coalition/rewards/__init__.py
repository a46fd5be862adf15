"""The rewards catalogue, vouchers and cross-brand coupons (issue 4, section 5).

- models.py: rewards (owned by partners), vouchers, coupon offers (owned by the operator).
- service.py: eligibility, redemption into a voucher, voucher validation and consumption.
- coupons.py: cross-brand coupons granted after a qualifying purchase.
- demo.py: the demo coalition's catalogue and vouchers.
"""

from coalition.rewards.coupons import grant_purchase_coupons
from coalition.rewards.service import eligible

__all__ = ["eligible", "grant_purchase_coupons"]
