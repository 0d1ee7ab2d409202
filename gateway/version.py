"""The version the gateway reports (/healthz, OpenAPI): the installed tiphub distribution's."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tiphub")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
