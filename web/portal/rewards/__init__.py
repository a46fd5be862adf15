"""The portal's loyalty rewards, one module per audience side by side:

- member.py: the member's pages (/member/rewards, /member/vouchers): every brand's
  catalogue, the redeem confirmation, my vouchers;
- console.py: the partner console (/partner/rewards): the brand's rewards and the
  till's voucher check;
- coupons.py: the operator (/operator/coupons): cross-brand coupon offers;
- forms.py: reading the console's reward form and the operator's coupon-offer form.

Their templates are in web/templates/rewards/. Every read and change is a use case of
coalition/rewards (queries.py, service.py, catalogue.py, offers.py), run in one Tx per
call."""


from web.portal.rewards.console import RewardConsolePages
from web.portal.rewards.coupons import CouponPages
from web.portal.rewards.member import MemberRewardPages

ROUTES = [MemberRewardPages, RewardConsolePages, CouponPages]
