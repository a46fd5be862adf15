"""The portal's partners and companies, one module per audience side by side:

- onboarding.py: becoming a partner: the public application (/partners/apply,
  /partners/terms), the operator's queue and decisions (/operator/partners) and the
  owner's invitation (/set-password);
- console.py: the partner console (/partner): home, OAuth clients and staff, and `staff`,
  the permission check every console page of the other areas uses;
- company.py: B2B company accounts: the company's people (/member/company) and the
  operator's companies (/operator/companies).

Their templates are in web/templates/partners/ (the console's home page is in
web/templates/home/). Every read and change is a use case of tenants (onboarding.py,
clients.py, staff.py, companies.py, queries.py), run in one Tx per call."""


from web.portal.partners.company import CompanyPages
from web.portal.partners.console import ConsolePages
from web.portal.partners.onboarding import OnboardingPages

ROUTES = [OnboardingPages, ConsolePages, CompanyPages]
