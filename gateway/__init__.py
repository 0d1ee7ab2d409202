"""The HTTP gateway (FastAPI): analysts, releasing officers, partners and auditors."""
