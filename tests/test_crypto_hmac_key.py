"""HmacSha256Key: a key made ready once gives what a fresh HMAC gives, and keeps itself
out of reprs and pickles."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refundcore.crypto import HmacSha256Key, hmac_sha256_hex


@given(key=st.binary(max_size=200), messages=st.lists(st.binary(max_size=300), max_size=4))
def test_each_message_is_signed_as_a_fresh_hmac_signs_it(key: bytes, messages: list[bytes]) -> None:
    ready = HmacSha256Key(key)
    for message in messages:
        assert ready.hexdigest(message) == hmac_sha256_hex(key, message)


def test_the_key_stays_out_of_reprs_and_pickles() -> None:
    ready = HmacSha256Key(b"sandbox-secret-value")
    assert "sandbox" not in repr(ready)
    with pytest.raises(TypeError):
        pickle.dumps(ready)
