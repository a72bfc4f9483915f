"""Properties of the AMI framing (pbx.wire), checked by hypothesis over generated input:

* what `encode_message` writes, `MessageParser` reads back as the same headers;
* a byte stream gives the same messages however recv() happens to split it (Asterisk
  writes a reply in several pieces, and TCP may cut anywhere, even between CR and LF);
* a CR, LF or NUL anywhere in an action name, a header name or a value is refused before
  anything is written, so no client text can add an AMI header.

The byte-literal cases, one per known pitfall, are in test_ami_framing.py.
"""

from hypothesis import assume, example, given, settings, strategies as st

import pytest

from callexchange.pbx import ami
from callexchange.pbx.wire import (MAX_HEADERS, MAX_LINE_BYTES, Message, MessageParser,
                                   encode_action, encode_message, parse_messages)

FORBIDDEN = ("\r", "\n", "\0")

# Header names as Asterisk has them (letters, digits, '-', '_', '(', ')', ...): any
# printable text without ':' or white space at its ends.
names = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"),
                              blacklist_characters=":"), min_size=1, max_size=30
                ).map(str.strip).filter(bool)
# Values: any text without CR, LF, NUL (the parser drops the spaces after the colon, as
# Asterisk does, so a value here starts with something else).
values = st.text(st.characters(blacklist_categories=("Cs",),
                               blacklist_characters="\r\n\0"), max_size=60
                 ).filter(lambda v: not v.startswith((" ", "\t")))
pairs = st.tuples(names, values)
messages = st.lists(pairs, min_size=1, max_size=12)


def feed_in_pieces(data, cuts, expect_banner=False):
    """The messages (and banner) a parser returns when `data` arrives cut at `cuts`."""
    parser = MessageParser(expect_banner=expect_banner)
    got = []
    start = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        got += parser.feed(data[start:cut])
        start = cut
    return got, parser.banner


def cuts_of(data_strategy):
    """(bytes, cut positions inside them)."""
    return data_strategy.flatmap(lambda data: st.tuples(
        st.just(data), st.lists(st.integers(0, len(data)), max_size=len(data) + 1)))


# --- round trips ----------------------------------------------------------------------

@given(messages)
@example([("ChanVariable(CDR(foo))", "bar"), ("CallerIDName", "status will follow")])
@example([("Timestamp", "12:30:00"), ("Message", "inner  spaces, trailing too  ")])
def test_what_encode_message_writes_the_parser_reads_back(headers):
    data = encode_message(headers)
    assert parse_messages(data) == [Message(headers)]


@given(st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                             blacklist_characters=":"), min_size=1, max_size=20),
       st.lists(pairs, max_size=10))
def test_an_action_is_read_back_with_action_first(name, fields):
    [message] = parse_messages(encode_action(name, fields))
    assert message.pairs == [("Action", name)] + fields
    assert message["action"] == name


@given(st.lists(messages, min_size=1, max_size=6))
def test_a_stream_of_messages_is_read_back_message_by_message(stream):
    data = b"".join(encode_message(headers) for headers in stream)
    assert parse_messages(data) == [Message(headers) for headers in stream]


# --- arbitrary splits -------------------------------------------------------------------

encoded_stream = st.lists(messages, min_size=1, max_size=5).map(
    lambda stream: b"Asterisk Call Manager/11.0.0\r\n"
    + b"".join(encode_message(headers) for headers in stream))


@settings(max_examples=300)
@given(cuts_of(encoded_stream))
def test_a_stream_cut_anywhere_gives_the_same_banner_and_messages(case):
    data, cuts = case
    whole, banner = feed_in_pieces(data, [], expect_banner=True)
    assert banner == "Asterisk Call Manager/11.0.0"
    assert feed_in_pieces(data, cuts, expect_banner=True) == (whole, banner)


@given(encoded_stream)
def test_a_stream_read_one_byte_at_a_time_gives_the_same_messages(data):
    assert feed_in_pieces(data, range(len(data)), expect_banner=True) == \
        feed_in_pieces(data, [], expect_banner=True)


# Whatever the bytes (bare LF, lone CR, lines without a colon, invalid UTF-8): no error,
# and the same result however they are cut.
raw_bytes = st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b":", b" ", b"Event: X",
                                      b"Response: Success", b"--END COMMAND--",
                                      b"\xff\xfe", b"\x00", b"a"]),
                     max_size=40).map(b"".join)


@settings(max_examples=300)
@given(cuts_of(raw_bytes | st.binary(max_size=200)))
def test_any_bytes_cut_anywhere_parse_the_same_and_never_raise(case):
    data, cuts = case
    assert feed_in_pieces(data, cuts) == feed_in_pieces(data, [])


@given(st.binary(max_size=64), st.integers(1, 64))
def test_partial_is_true_exactly_while_a_message_is_unfinished(prefix, size):
    parser = MessageParser()
    parser.feed(prefix + b"\r\n\r\n")
    assert not parser.partial
    parser.feed(b"Response: Success"[:size])
    assert parser.partial


# --- CR, LF and NUL are always refused ---------------------------------------------------

def with_forbidden(text_strategy):
    """Text with one CR, LF or NUL put in at any position."""
    return st.tuples(text_strategy, st.sampled_from(FORBIDDEN), st.integers(0, 1000)).map(
        lambda t: t[0][:t[2] % (len(t[0]) + 1)] + t[1] + t[0][t[2] % (len(t[0]) + 1):])


@given(with_forbidden(values), messages, st.integers(0, 11))
def test_a_value_holding_cr_lf_or_nul_is_refused(bad, headers, position):
    headers = list(headers)
    name = headers[position % len(headers)][0]
    headers[position % len(headers)] = (name, bad)
    with pytest.raises(ValueError):
        encode_message(headers)
    with pytest.raises(ValueError):
        encode_action("MessageSend", headers)


@given(with_forbidden(names), values)
def test_a_header_name_holding_cr_lf_or_nul_is_refused(bad, value):
    with pytest.raises(ValueError):
        encode_message([(bad, value)])


@given(with_forbidden(names))
def test_an_action_name_holding_cr_lf_or_nul_is_refused(bad):
    with pytest.raises(ValueError):
        encode_action(bad, [])


@given(with_forbidden(values))
def test_the_gateway_actions_refuse_cr_lf_or_nul_in_any_field(bad):
    with pytest.raises(ValueError):
        ami.message_fields("pjsip:2001", bad)
    with pytest.raises(ValueError):
        ami.message_fields(bad, "hello")
    with pytest.raises(ValueError):
        ami.check_variable("CX_CRM_ID", bad)
    for field in ("channel", "context", "exten", "channel_id", "caller_id"):
        arguments = dict(channel="PJSIP/2001", context="callexchange-outbound",
                         exten="12127773456", channel_id="1700000000.1", timeout_ms=30000,
                         caller_id="12125550100")
        arguments[field] = bad
        with pytest.raises(ValueError):
            ami.originate_fields(**arguments)


@given(messages)
def test_whatever_encode_message_accepts_fits_asterisks_limits(headers):
    try:
        data = encode_message(headers)
    except ValueError:
        assume(False)
    lines = data.split(b"\r\n")
    assert lines[-2:] == [b"", b""]
    assert len(lines) - 2 <= MAX_HEADERS
    assert all(len(line) <= MAX_LINE_BYTES for line in lines)
    assert not any(char.encode() in line for line in lines for char in FORBIDDEN)
