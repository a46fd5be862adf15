"""The shared currency domain: members, ledger, lots, and (later) rules, tiers, rewards."""
