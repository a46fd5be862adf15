"""Partner tenants: partners, OAuth 2.0 clients and tokens, tenant isolation."""
