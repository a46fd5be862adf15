"""Settlement: what partners owe each other for points issued at one brand and spent at
another, turned into statements, netted, collected and paid through Stripe, and
reconciled against the ledger."""
