"""localpiston: a Piston-compatible (API 3.1.1) local sandbox server for development and tests.

It speaks engineer-man/piston's HTTP and WebSocket API, quirks included, and really runs Python.
It is NOT a security boundary: see localpiston/README.md.
"""

PISTON_VERSION = "3.1.1"

__all__ = ["PISTON_VERSION"]
