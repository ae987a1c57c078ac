"""``PISTON_TRANSPORT=auto``: the one rule for falling back from the WebSocket to ``/execute``.

A run asked as ``auto`` goes over the WebSocket until the sandbox shows it has none (refused at the
handshake, before anything ran). That run is then carried out over ``/execute``, and so is every later
``auto`` run of this process. The runner resolves ``auto`` itself (``resolve``) to build the box for
the transport the hub will be on, and sends that transport with a ``fallback``: the files rebuilt for
``/execute`` (the hub inside the box must know it is on the batch transport). Adapters only ever see
``ws`` or ``execute``.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import structlog

from dispatcher.sandbox.port import RunResult, Sandbox, SandboxRequest, SandboxUnsupported, Transport

log = structlog.get_logger("sandbox")


class AutoTransport:
    """A sandbox that also takes ``auto``; wraps one that takes only ``ws`` and ``execute``."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._no_websocket = threading.Event()  # set once: this sandbox has no WebSocket endpoint

    def resolve(self, requested: Transport) -> Transport:
        """The transport a run asked as ``requested`` goes over (its files must be built for it)."""
        requested = Transport(requested)
        if requested is not Transport.AUTO:
            return requested
        return Transport.EXECUTE if self._no_websocket.is_set() else Transport.WS

    def run(self, request: SandboxRequest) -> RunResult:
        transport = self.resolve(request.transport)
        may_fall_back = request.transport is Transport.AUTO or request.fallback is not None
        try:
            return self.sandbox.run(replace(request, transport=transport, fallback=None))
        except SandboxUnsupported as err:
            if not (may_fall_back and transport is Transport.WS):
                raise
            log.warning("piston_ws_unsupported_fallback", error=str(err))
            self._no_websocket.set()
        files = request.fallback(Transport.EXECUTE) if request.fallback is not None else request.files
        return self.sandbox.run(replace(request, transport=Transport.EXECUTE, files=files, fallback=None))
