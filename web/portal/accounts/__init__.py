"""The portal's accounts: how people get in and what they have agreed to, one module per
concern side by side:

- auth.py: login and logout, member sign-up (and /join/{code}), email verification and
  new confirmation links, forgotten and reset passwords;
- authorize.py: /oauth/authorize, a member's sign-in and consent to a partner's app;
- sso.py: staff single sign-on, the company sign-in (/sso) and the partner's provider
  settings (/partner/sso);
- profile.py: the partner's profile and terms acceptances (/partner/profile);
- connections.py: a member's connected brands (/member/connections).

Their templates are in web/templates/accounts/. Every read and change is a use case of
tenants (logins.py, accounts.py, consents.py, sso.py, onboarding.py, queries.py) or of
coalition/referrals.py, run in one Tx per call."""


from web.portal.accounts.auth import AuthPages
from web.portal.accounts.authorize import AuthorizePages
from web.portal.accounts.connections import ConnectionPages
from web.portal.accounts.profile import ProfilePages
from web.portal.accounts.sso import SsoLoginPages, SsoSettingsPages

ROUTES = [AuthPages, AuthorizePages, SsoLoginPages, SsoSettingsPages, ProfilePages,
          ConnectionPages]
