"""The hub's rules, free of I/O: linkage and subjects, the accepted projection, resolution and the
Collection Plan, visibility, release rules, the audit chain, and the ports (Protocols) adapters fill.

Nothing here imports a broker client, a database driver, an HTTP framework or an adapter package;
`scripts/check_layers.py` (make lint) holds that."""
