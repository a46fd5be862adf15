"""The portal's settlement area, one module per subject side by side:

- terms.py: commercial terms. Operator (/operator/rate-cards, /operator/fx-rates,
  /operator/prepaid): rate cards per partner, the FX table, every partner's prepaid
  blocks; partner (/partner/terms, /partner/prepaid): its rate card history and its
  prepaid balance and block requests;
- statements.py: settlement runs and statements. Operator (/operator/settlement): runs,
  netting, flows, lifecycle and disputes; partner (/partner/statements): its statements,
  CSV, printable view and line disputes;
- payments.py: payments. Partner (/partner/payouts): payout and billing details and its
  payments; operator (/operator/payments): every payment, failed-payment notifications,
  the SEPA export and marking an exported payout paid or failed;
- finance.py: the operator's reconciliation (/operator/reconciliation) and points
  liability (/operator/liability).

Their templates are in web/templates/settlement/. Every read and change is a use case of
settlement/ (queries.py, actions.py and the service modules), run in one Tx per call."""


from web.portal.settlement.finance import OperatorFinancePages
from web.portal.settlement.payments import OperatorPaymentPages, PartnerPayoutPages
from web.portal.settlement.statements import OperatorSettlementPages, PartnerStatementPages
from web.portal.settlement.terms import OperatorTermsPages, PartnerTermsPages

ROUTES = [OperatorTermsPages, PartnerTermsPages, OperatorSettlementPages,
          PartnerStatementPages, OperatorPaymentPages, PartnerPayoutPages,
          OperatorFinancePages]
