"""core.db.TextListDumper: psycopg's text array format, byte for byte, without its per-element regex."""

from __future__ import annotations

import json
from typing import Any

import pytest
from psycopg.adapt import PyFormat, Transformer
from psycopg.types.array import ListDumper

from core.db import TextListDumper

TRICKY: list[list[Any]] = [
    ["plain", "with space", 'a "quote"', "back\\slash", "", "NULL", "null", "{braces}", "a,b", "tab\t", "é \u2028 ☃"],
    [json.dumps({"type": "job_status", "job_id": "j", "status": "PROCESSING", "note": 'x"\\y'})],
    ["a", None, "b"],
    [1, 2, 3, 2**40],
    [[1, 2], [3, 4]],
    [['a"', "b"], ["c", "d\\"]],
    [],
    [None],
]


@pytest.mark.parametrize("value", TRICKY)
def test_a_list_is_dumped_exactly_as_psycopg_dumps_it(value: list[Any]) -> None:
    tx = Transformer()
    ours = TextListDumper(list, tx).upgrade(value, PyFormat.TEXT)
    theirs = ListDumper(list, tx).upgrade(value, PyFormat.TEXT)
    assert type(ours) is TextListDumper
    assert ours.oid == theirs.oid
    assert ours.dump(value) == theirs.dump(value)
