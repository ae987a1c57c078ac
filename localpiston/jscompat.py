"""Small helpers reproducing the JavaScript semantics Piston's Node code relies on.

Piston validates requests with JS operators (`!x`, `typeof`, `??`, `String(x)`), decodes files with
Node's lenient `Buffer.from`, and reports parse errors with V8's messages. Clients see all of that,
so the imitation has to follow the same rules.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

JSON_ERROR_PREFIX_STACK = (
    "    at JSON.parse (<anonymous>)\n    at parse (/piston_api/node_modules/body-parser/lib/types/json.js:89:19)"
)


def typeof(value: Any) -> str:
    """JavaScript `typeof` for a value decoded from JSON (None stands for both null and undefined)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "undefined"
    return "object"


def truthy(value: Any) -> bool:
    """JavaScript truthiness (NaN, 0, '', null, false are falsy; [] and {} are truthy)."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return not (value == 0 or (isinstance(value, float) and math.isnan(value)))
    if isinstance(value, str):
        return value != ""
    return True


def number_to_string(value: float) -> str:
    """`String(n)` for a JS number (close enough for every value JSON can carry)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) < 10**21:
            return str(value)
        value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        text = f"{mantissa}e{sign}{int(exponent.lstrip('+-'))}"
    return text


def js_string(value: Any) -> str:
    """`String(value)` for a JSON-decoded value."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        return number_to_string(value)
    if isinstance(value, list):
        return ",".join("" if item is None else js_string(item) for item in value)
    return "[object Object]"


def js_number(value: float | None) -> float | int | None:
    """A float as JSON.stringify would print it: integral values without a trailing `.0`."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_int(raw: Any) -> float:
    """JavaScript `parseInt(String(raw))`: leading integer, NaN when there is none."""
    text = js_string(raw).lstrip(" \t\n\r\v\f\ufeff\xa0")
    match = re.match(r"([+-]?)(0[xX][0-9a-fA-F]+|\d+)", text)
    if not match:
        return math.nan
    sign, digits = match.groups()
    number = int(digits, 16) if digits[:2].lower() == "0x" else int(digits)
    return -number if sign == "-" else number


_B64_CHARS = re.compile(r"[^A-Za-z0-9+/\-_]")


def node_base64_decode(text: str) -> bytes:
    """Node's lenient base64 decoder: skips foreign characters, stops at '=', accepts URL-safe."""
    text = text.split("=", 1)[0]
    text = _B64_CHARS.sub("", text).replace("-", "+").replace("_", "/")
    if len(text) % 4 == 1:
        text = text[:-1]
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError):
        return b""


def node_hex_decode(text: str) -> bytes:
    """Node's hex decoder: pairs of hex digits until the first invalid pair."""
    out = bytearray()
    for i in range(0, len(text) - 1, 2):
        pair = text[i : i + 2]
        if not re.fullmatch(r"[0-9a-fA-F]{2}", pair):
            break
        out.append(int(pair, 16))
    return bytes(out)


def node_utf8_encode(text: str) -> bytes:
    """Buffer.from(str, 'utf8'): lone surrogates become U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return fixed.encode("utf-8")


def utf16_length(text: str) -> int:
    """JavaScript `string.length` (UTF-16 code units)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


class JSONSyntaxError(Exception):
    """A body that JSON.parse (or body-parser's strict mode) would reject, with V8's message."""


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def parse_json_strict(text: str) -> Any:
    """body-parser's strict JSON: the first non-blank character must be '{' or '['."""
    stripped = text.lstrip(" \t\n\r")
    if stripped and stripped[0] not in "{[":
        position = len(text) - len(stripped)
        raise JSONSyntaxError(f"Unexpected token {stripped[0]} in JSON at position {position}")
    return parse_json(text)


def parse_json(text: str) -> Any:
    """JSON.parse with V8-style (Node 15) error messages."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        position = exc.pos
        if position >= len(text.rstrip(" \t\n\r")):
            raise JSONSyntaxError("Unexpected end of JSON input") from None
        raise JSONSyntaxError(f"Unexpected token {text[position]} in JSON at position {position}") from None
    except ValueError as exc:
        # NaN / Infinity / -Infinity: valid for Python, not for JSON.parse.
        position = max(text.find(str(exc)), 0)
        raise JSONSyntaxError(f"Unexpected token {text[position]} in JSON at position {position}") from None
    except RecursionError:
        raise JSONSyntaxError("Maximum call stack size exceeded") from None


def syntax_error_stack(message: str) -> str:
    return f"SyntaxError: {message}\n{JSON_ERROR_PREFIX_STACK}"
