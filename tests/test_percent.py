"""Percent-encoding both ways (callexchange.percent): what crosses AMI and AGI encoded comes
back exactly as the client sent it."""
from hypothesis import given, strategies as st

from callexchange import percent


def test_decode_undoes_encode_for_every_kind_of_text():
    for text in ("lead 7, NY", "100%", "Köln/✓", "a%zz", "", "emoji 🎉 and CJK 漢字"):
        assert percent.decode(percent.encode(text)) == text


@given(st.text())
def test_encode_leaves_only_unreserved_characters_and_decode_inverts_it(text):
    encoded = percent.encode(text)
    assert set(encoded) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                               "0123456789-._~%")
    assert percent.decode(encoded) == text


def test_malformed_escapes_are_kept_as_written():
    assert percent.decode("100%") == "100%"
    assert percent.decode("%zz%4") == "%zz%4"
    assert percent.decode_bytes("%FF") == b"\xff"
    assert percent.decode("%FF") == "\ufffd"


def test_is_hex():
    assert percent.is_hex("0123456789abcdefABCDEF")
    assert not percent.is_hex("") and not percent.is_hex("12g4")
