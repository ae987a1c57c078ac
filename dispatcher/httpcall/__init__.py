"""Brokered HTTP for agents (``hub.http``): the sandbox has no network, the dispatcher makes the call.

- ``request``: the call's arguments checked, ``{{SECRET_…}}`` substituted, encoded by requests;
- ``transport``: the pooled client that connects to the checked address (pinning) under one deadline;
- ``broker``: one call, hop by hop (``HttpBroker``, ``broker_for``; its settings: dispatcher.config.HttpSettings);
- ``run``: one run's calls (``RunHttp``): budget, masking, reply, JobLog line, stats;
- ``metrics``: the Prometheus series.

The rules themselves (argument checks, secrets, the two allow-lists, address classes, each hop and redirect)
are standard-library modules of the hub package, ``hubpy/hub/_httpargs.py``, ``_secrets.py``, ``_hosts.py``,
``_addresses.py``, ``_httphops.py``, ``_httperrors.py``: ``python -m hub run`` applies the same ones when an author
runs an agent locally, and the SDK stays installable on its own (``pip install ./hubpy``).

See docs/security.md, "Brokered HTTP". Import the modules themselves: the package imports none of them, so
none of them imports the package back (tests/unit/test_dispatcher_imports.py).
"""
