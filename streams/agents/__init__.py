"""One stage per module, named for what it does: accept_reports, decide_sharing, chain_audit, correlate_signals."""
