"""The part of node-semver's `satisfies(version, range)` Piston uses to pick a runtime.

Supports x-ranges (`*`, `3`, `3.x`, `3.11.*`), exact versions (with optional `v` / `=`), the
comparators `< <= > >= =`, tilde and caret ranges, hyphen ranges (`3.10 - 3.12`), space-separated
intersections and `||` unions. Anything node-semver would call an invalid range (such as
`latest`) matches nothing, exactly as `semver.satisfies` returns false for it.
"""

from __future__ import annotations

import re

Version = tuple[int, int, int, tuple[int | str, ...] | None]  # prerelease None = release

_NUM = r"0|[1-9]\d*"
_XR = rf"{_NUM}|[xX*]"
_PRE_ID = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][a-zA-Z0-9-]*)"
_PARTIAL = re.compile(
    rf"^v?(?P<major>{_XR})(?:\.(?P<minor>{_XR})(?:\.(?P<patch>{_XR})"
    rf"(?:-(?P<pre>{_PRE_ID}(?:\.{_PRE_ID})*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?)?)?$"
)
_COMPARATOR = re.compile(r"^(?P<op><=|>=|<|>|=|~>|~|\^)?=?\s*(?P<ver>.*)$")


class InvalidRange(ValueError):
    pass


def parse_version(text: str) -> Version:
    match = _PARTIAL.match(text.strip().lstrip("="))
    if not match or any(match[g] is None or match[g] in "xX*" for g in ("major", "minor", "patch")):
        raise InvalidRange(text)
    return _to_version(int(match["major"]), int(match["minor"]), int(match["patch"]), match["pre"])


def _to_version(major: int, minor: int, patch: int, pre: str | None = None) -> Version:
    pre_t = None if pre is None else tuple(int(p) if p.isdigit() else p for p in pre.split("."))
    return (major, minor, patch, pre_t)


def _key(v: Version) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    pre = v[3]
    if pre is None:
        return (v[0], v[1], v[2], 1, ())
    return (v[0], v[1], v[2], 0, tuple((0, p) if isinstance(p, int) else (1, p) for p in pre))


def _cmp(a: Version, b: Version) -> int:
    ka, kb = _key(a), _key(b)
    return (ka > kb) - (ka < kb)


def _lowest(major: int, minor: int, patch: int) -> Version:
    """The `-0` prerelease: the smallest version of major.minor.patch, used for exclusive bounds."""
    return (major, minor, patch, (0,))


Comparator = tuple[str, Version]


def _partial(text: str) -> tuple[int | None, int | None, int | None, str | None]:
    match = _PARTIAL.match(text)
    if not match:
        raise InvalidRange(text)

    def num(group: str) -> int | None:
        value = match[group]
        return None if value is None or value in "xX*" else int(value)

    major, minor, patch = num("major"), num("minor"), num("patch")
    if major is None:
        minor = patch = None
    elif minor is None:
        patch = None
    return major, minor, patch, match["pre"]


def _comparators(op: str, text: str) -> list[Comparator]:
    if text in ("", "*", "x", "X"):
        major = minor = patch = None
        pre = None
    else:
        major, minor, patch, pre = _partial(text)
    if major is None:
        if op in ("<", ">"):
            return [("<", _lowest(0, 0, 0))]  # matches nothing
        return [(">=", _lowest(0, 0, 0))]
    if op == "~" or op == "~>":
        low = _to_version(major, minor or 0, patch or 0, pre)
        high = _lowest(major + 1, 0, 0) if minor is None else _lowest(major, minor + 1, 0)
        return [(">=", low), ("<", high)]
    if op == "^":
        low = _to_version(major, minor or 0, patch or 0, pre)
        if major != 0 or minor is None:
            high = _lowest(major + 1, 0, 0)
        elif minor != 0 or patch is None:
            high = _lowest(0, minor + 1, 0)
        else:
            high = _lowest(0, 0, (patch or 0) + 1)
        return [(">=", low), ("<", high)]
    if minor is None or patch is None:  # an x-range with a partial version
        if op in ("", "="):
            low = _to_version(major, minor or 0, 0)
            high = _lowest(major + 1, 0, 0) if minor is None else _lowest(major, minor + 1, 0)
            return [(">=", low), ("<", high)]
        if op == ">":
            return [(">=", _to_version(major + 1, 0, 0) if minor is None else _to_version(major, minor + 1, 0))]
        if op == ">=":
            return [(">=", _to_version(major, minor or 0, 0))]
        if op == "<":
            return [("<", _lowest(major, minor or 0, 0))]
        # "<="
        return [("<", _lowest(major + 1, 0, 0) if minor is None else _lowest(major, minor + 1, 0))]
    return [(op or "=", _to_version(major, minor, patch, pre))]


def _parse_set(text: str) -> list[Comparator]:
    text = text.strip()
    hyphen = re.fullmatch(r"(\S+)\s+-\s+(\S+)", text)
    if hyphen:
        lo_major, lo_minor, lo_patch, lo_pre = _partial(hyphen[1])
        hi_major, hi_minor, hi_patch, hi_pre = _partial(hyphen[2])
        result: list[Comparator] = []
        if lo_major is not None:
            result.append((">=", _to_version(lo_major, lo_minor or 0, lo_patch or 0, lo_pre)))
        if hi_major is not None:
            if hi_minor is None:
                result.append(("<", _lowest(hi_major + 1, 0, 0)))
            elif hi_patch is None:
                result.append(("<", _lowest(hi_major, hi_minor + 1, 0)))
            else:
                result.append(("<=", _to_version(hi_major, hi_minor, hi_patch, hi_pre)))
        return result or [(">=", _lowest(0, 0, 0))]
    text = re.sub(r"(<=|>=|<|>|=|~>|~|\^)\s+", r"\1", text)
    result = []
    for token in text.split() or [""]:
        match = _COMPARATOR.match(token)
        if match is None:
            raise InvalidRange(token)
        result.extend(_comparators(match["op"] or "", match["ver"]))
    return result


def _test(comparator: Comparator, version: Version) -> bool:
    op, bound = comparator
    c = _cmp(version, bound)
    return {"<": c < 0, "<=": c <= 0, ">": c > 0, ">=": c >= 0, "=": c == 0}[op]


def satisfies(version: str, range_text: str) -> bool:
    """True when `version` satisfies `range_text`; False for invalid ranges (like node-semver)."""
    try:
        parsed = parse_version(version)
        sets = [_parse_set(part) for part in range_text.split("||")]
    except InvalidRange:
        return False
    for comparators in sets:
        if not all(_test(c, parsed) for c in comparators):
            continue
        if parsed[3] is not None and not any(
            bound[3] is not None and bound[:3] == parsed[:3] and bound[3] != (0,) for _, bound in comparators
        ):
            continue  # prereleases only match a comparator naming the same [major, minor, patch]
        return True
    return False
