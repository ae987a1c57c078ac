"""Brokered HTTP for agents (``hub.http``): the sandbox has no network, the dispatcher makes the call.

- ``request``: the call's arguments checked, ``{{SECRET_…}}`` substituted (``dispatcher.secrets``);
- ``hosts`` / ``addresses``: the two allow-lists and the address rules;
- ``transport``: the pooled client that connects to the checked address (pinning) under one deadline;
- ``broker``: one call, hop by hop (``HttpBroker``, ``HttpSettings``, ``broker_for``);
- ``run``: one run's calls (``RunHttp``): budget, masking, reply, JobLog line, stats.

See docs/security.md, "Brokered HTTP". Import the modules themselves: the package imports none of them, so
none of them imports the package back (tests/unit/test_dispatcher_imports.py).
"""
