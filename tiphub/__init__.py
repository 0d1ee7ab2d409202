"""tiphub: the shared kernel (settings, keys, crypto, linkage, embedded broker, CLI)."""

__version__ = "0.1.0"
