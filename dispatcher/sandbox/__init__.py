"""The sandbox an agent runs in: the port (port.py), its adapters (piston/, scripted.py), the transport rule (auto.py)."""
