"""Rule-based segments and RFM scores (definitions.py: the JSON and its SQL;
service.py: preview, save, refresh)."""
