"""The Litestar application: HTTP API, portal pages, CLI. Wires the domains together."""
