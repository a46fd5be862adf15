"""Earning rules: the pure evaluation engine (engine.py), the versioned tables
(models.py) and their management and cache (service.py)."""
