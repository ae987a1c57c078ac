"""Piston behind the sandbox port, split by transport: client.py (the adapter), ws.py, execute.py, http.py, status.py."""
