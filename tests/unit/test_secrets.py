"""SECRET_* env vars: withheld from the sandbox, substituted into requests, masked in every form they come back in."""

from __future__ import annotations

import base64
import html
import json
from urllib.parse import quote, quote_plus

import pytest

from hubpy.hub._secrets import MASK, SecretBox, SecretTooShort, UnknownSecret, is_secret_name, withhold

TOKEN = "tok/en+a&b=c d\"e'9f"  # characters that every encoding changes


def test_only_secret_prefixed_names_are_withheld_from_the_sandbox() -> None:
    env = {"SECRET_API_TOKEN": "v1", "SECRET_": "v2", "secret_lower": "v3", "HUB_HTTP_ALLOW": "a.test", "MY_SECRET_X": "v4"}
    visible, secrets = withhold(env)
    assert secrets == {"SECRET_API_TOKEN": "v1"}
    assert visible == {"SECRET_": "v2", "secret_lower": "v3", "HUB_HTTP_ALLOW": "a.test", "MY_SECRET_X": "v4"}
    assert is_secret_name("SECRET_A") and not is_secret_name("SECRET_") and not is_secret_name("Secret_A")


def test_every_placeholder_is_replaced_and_other_braces_are_left_alone() -> None:
    box = SecretBox({"SECRET_A": "alpha-value", "SECRET_B": "beta-value"})
    text = "{{SECRET_A}}/{{ SECRET_B }}/{{SECRET_A}} {{NAME}} {{secret_a}} {SECRET_A}"
    assert box.substitute(text, "url") == "alpha-value/beta-value/alpha-value {{NAME}} {{secret_a}} {SECRET_A}"


def test_an_unknown_secret_names_itself_and_where_it_was_but_no_value() -> None:
    box = SecretBox({"SECRET_A": "alpha-value"})
    with pytest.raises(UnknownSecret) as info:
        box.substitute("Bearer {{SECRET_MISSING}} {{SECRET_A}}", "header 'Authorization'")
    message = str(info.value)
    assert "{{SECRET_MISSING}}" in message and "header 'Authorization'" in message and "alpha-value" not in message


def test_only_secret_env_vars_can_be_substituted() -> None:
    box = SecretBox({"SECRET_A": "alpha-value", "PLAIN": "plain-value"})
    assert box.names == {"SECRET_A"}
    with pytest.raises(UnknownSecret):
        box.substitute("{{SECRET_PLAIN}}", "url")


@pytest.mark.parametrize("form", [
    TOKEN, json.dumps(TOKEN)[1:-1], repr(TOKEN)[1:-1], quote(TOKEN, safe=""), quote(TOKEN), quote_plus(TOKEN),
    TOKEN.replace("/", "\\/"), html.escape(TOKEN), base64.b64encode(TOKEN.encode()).decode(),
])
def test_a_secret_is_masked_in_every_form_an_echo_may_return_it(form: str) -> None:
    masked = SecretBox({"SECRET_T": TOKEN}).mask(f"<<{form}>>")
    assert masked == f"<<{MASK}>>", masked


def test_other_env_values_are_masked_in_logs_but_not_in_what_goes_back_to_the_agent() -> None:
    box = SecretBox({"SECRET_T": "secret-value"}, also_mask=["visible-env-value"])
    assert box.mask_for_log("secret-value visible-env-value") == f"{MASK} {MASK}"
    assert box.mask("secret-value visible-env-value") == f"{MASK} visible-env-value"


def test_a_secret_too_short_to_mask_is_never_put_in() -> None:
    with pytest.raises(SecretTooShort, match="SECRET_PIN is shorter than 4 characters"):
        SecretBox({"SECRET_PIN": "123"}).substitute("pin={{SECRET_PIN}}", "url")


def test_head_leaves_no_piece_of_a_secret_at_the_cut() -> None:
    box = SecretBox({"SECRET_T": "0123456789abcdef"})
    assert "0123" not in box.head("x" * 10 + "0123456789abcdef", 16)


def test_clip_masks_whole_values_and_cuts_like_head_only_when_the_text_is_longer() -> None:
    box = SecretBox({"SECRET_A": "alpha-secret-value"}, also_mask=["127.0.0.1,169.254.169.254"])
    # An env value that ends like the message starts: no cut, so no fragment to mask.
    assert box.clip("169.254.169.254 is never allowed", 200) == "169.254.169.254 is never allowed"
    assert box.head("169.254.169.254 is never allowed", 200).startswith(MASK)  # head is for windows
    assert box.clip("x alpha-secret-value y", 200) == f"x {MASK} y"
    assert box.clip("x" * 10 + "alpha-sec", 14) == "x" * 10 + MASK  # cut: no piece of a secret at the cut
