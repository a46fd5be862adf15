"""The portal's affiliate area, one module per audience side by side:

- affiliate.py: the affiliate's own pages (/affiliate): sign-up, programs to join,
  payout details, and the dashboard (figures, commissions, payouts, creatives);
- partner.py: the partner console (/partner/affiliates): programs, their terms,
  affiliates and creatives, and the commissions under review;
- operator.py: the operator (/operator/affiliates/commissions, /operator/affiliate-payouts);
- review.py: the commissions under review, shared by the partner's and the operator's.

Their templates are in web/templates/affiliates/. Every read and change is a use case of
coalition/affiliates (queries.py, service.py), of tenants/affiliate_signup.py or of
settlement/affiliate_payouts.py, run in one Tx per call."""


from web.portal.affiliates.affiliate import AffiliateDashboardPages, AffiliatePages
from web.portal.affiliates.operator import (
    OperatorAffiliatePayoutPages,
    OperatorCommissionPages,
)
from web.portal.affiliates.partner import (
    AffiliateConsolePages,
    PartnerCommissionPages,
)

ROUTES = [AffiliatePages, AffiliateDashboardPages, AffiliateConsolePages,
          PartnerCommissionPages, OperatorCommissionPages, OperatorAffiliatePayoutPages]
