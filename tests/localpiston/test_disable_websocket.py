"""PISTON_DISABLE_WEBSOCKET (localpiston only): a Piston whose /api/v2/connect a proxy has cut off."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from localpiston.config import ConfigError, load_config

from .conftest import Server


@pytest.fixture(scope="session")
def piston_no_ws(server_factory: Callable[[dict[str, str]], Server]) -> Server:
    return server_factory({"PISTON_DISABLE_WEBSOCKET": "true"})


def test_websocket_is_served_unless_disabled() -> None:
    assert load_config({}).websocket is True
    assert load_config({"PISTON_DISABLE_WEBSOCKET": "false"}).websocket is True
    assert load_config({"PISTON_DISABLE_WEBSOCKET": "true"}).websocket is False


def test_a_disable_websocket_value_other_than_true_or_false_is_rejected() -> None:
    with pytest.raises(ConfigError, match="disable_websocket failed validation: yes is not true or false"):
        load_config({"PISTON_DISABLE_WEBSOCKET": "yes"})


def test_disabled_websocket_answers_the_upgrade_with_404_and_execute_still_works(piston_no_ws: Server) -> None:
    with pytest.raises(InvalidStatus) as info, connect(piston_no_ws.ws_url, open_timeout=10):
        pass
    assert info.value.response.status_code == 404
    assert piston_no_ws.run("print('still here')")["stdout"] == "still here\n"
    assert requests.get(piston_no_ws.url + "/api/v2/runtimes", timeout=5).status_code == 200
    assert "PISTON_DISABLE_WEBSOCKET=true" in piston_no_ws.log()


def test_websocket_is_still_served_by_default(piston: Server) -> None:
    with connect(piston.ws_url, open_timeout=10) as ws:
        assert ws.protocol.state.name == "OPEN"
