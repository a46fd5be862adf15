"""Partner API v1."""
