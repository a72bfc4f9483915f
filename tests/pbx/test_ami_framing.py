"""AMI framing as pure functions over bytes: encode_action, MessageParser, ActionID matching.

The wire text is what Asterisk sends and accepts (CR LF line ends, a blank line after each
message, the banner as a single line). pyst2 failed on several of these inputs (see
docs/decisions.md); each has a byte-literal test here.
"""

import socket
import threading

import pytest

from callexchange.pbx import ami, wire
from callexchange.pbx.wire import encode_action, Message, MessageParser, parse_messages


# --- encode_action ------------------------------------------------------------------------

def test_encode_action_writes_action_first_then_fields_in_order():
    data = encode_action("Originate", [("ActionID", "a1"), ("Channel", "PJSIP/1001"),
                                       ("Async", "true")])
    assert data == (b"Action: Originate\r\nActionID: a1\r\nChannel: PJSIP/1001\r\n"
                    b"Async: true\r\n\r\n")


def test_encode_action_keeps_repeated_headers_such_as_variable():
    data = encode_action("Originate", [("Variable", "A=1"), ("Variable", "B=2"),
                                       ("Variable", "C=3")])
    assert data == (b"Action: Originate\r\nVariable: A=1\r\nVariable: B=2\r\n"
                    b"Variable: C=3\r\n\r\n")


def test_encode_action_writes_integers_and_utf8():
    data = encode_action("MessageSend", [("Timeout", 30000), ("Body", "Grüße")])
    assert data == "Action: MessageSend\r\nTimeout: 30000\r\nBody: Grüße\r\n\r\n".encode()


@pytest.mark.parametrize("bad", ["\r", "\n", "\0", "x\r\nAction: Command", "a\nb"])
def test_encode_action_refuses_cr_lf_nul_in_values(bad):
    with pytest.raises(ValueError):
        encode_action("MessageSend", [("To", "pjsip:1001"), ("Body", "hi" + bad)])


@pytest.mark.parametrize("name", ["Bo\rdy", "Bo\ndy", "Bo\0dy", "Bo:dy", "", " "])
def test_encode_action_refuses_bad_header_names(name):
    with pytest.raises(ValueError):
        encode_action("MessageSend", [(name, "x")])


@pytest.mark.parametrize("name", ["Ping\r\nAction: Command", "Ping\n", "Pi\0ng"])
def test_encode_action_refuses_cr_lf_nul_in_the_action_name(name):
    with pytest.raises(ValueError):
        encode_action(name, [])


def test_encode_action_refuses_non_text_values():
    with pytest.raises(TypeError):
        encode_action("Ping", [("ActionID", b"bytes")])
    with pytest.raises(TypeError):
        encode_action("Ping", [("ActionID", None)])


def test_encode_action_accepts_a_1000_byte_body_and_refuses_a_line_asterisk_would_drop():
    assert encode_action("MessageSend", [("Body", "é" * 500)]).count(b"\r\n") == 3
    with pytest.raises(ValueError, match="1022"):
        encode_action("MessageSend", [("Body", "x" * 1017)])


def test_encode_action_refuses_more_headers_than_asterisk_keeps():
    encode_action("Originate", [("Variable", "V%d=1" % i) for i in range(127)])
    with pytest.raises(ValueError):
        encode_action("Originate", [("Variable", "V%d=1" % i) for i in range(128)])


# --- the parser ---------------------------------------------------------------------------

LOGIN_REPLY_AND_EVENT = (b"Response: Success\r\nActionID: cx-1\r\n"
                         b"Message: Authentication accepted\r\n\r\n"
                         b"Event: FullyBooted\r\nPrivilege: system,all\r\n"
                         b"Status: Fully Booted\r\n\r\n")


def test_parser_splits_messages_at_blank_lines_and_keeps_header_order():
    first, second = parse_messages(LOGIN_REPLY_AND_EVENT)
    assert first.pairs == [("Response", "Success"), ("ActionID", "cx-1"),
                           ("Message", "Authentication accepted")]
    assert second.pairs == [("Event", "FullyBooted"), ("Privilege", "system,all"),
                            ("Status", "Fully Booted")]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 19, 64])
def test_parser_gives_the_same_messages_whatever_the_recv_chunks(size):
    parser = MessageParser()
    messages = []
    for start in range(0, len(LOGIN_REPLY_AND_EVENT), size):
        messages += parser.feed(LOGIN_REPLY_AND_EVENT[start:start + size])
    assert messages == parse_messages(LOGIN_REPLY_AND_EVENT)
    assert len(messages) == 2
    assert not parser.partial


def test_parser_handles_a_chunk_boundary_between_cr_and_lf_of_the_blank_line():
    parser = MessageParser()
    assert parser.feed(b"Response: Success\r\nActionID: 1\r\n\r") == []
    assert parser.partial
    assert parser.feed(b"\nResponse: Error\r\n") == [
        Message([("Response", "Success"), ("ActionID", "1")])]


def test_parser_tolerates_bare_lf_and_mixed_line_ends():
    messages = parse_messages(b"Response: Success\nActionID: 1\n\n"
                              b"Event: Hangup\r\nCause: 16\n\r\n")
    assert [m.pairs for m in messages] == [[("Response", "Success"), ("ActionID", "1")],
                                           [("Event", "Hangup"), ("Cause", "16")]]


def test_parser_ignores_extra_blank_lines_between_messages():
    messages = parse_messages(b"\r\n\r\nEvent: A\r\n\r\n\r\n\r\nEvent: B\r\n\r\n")
    assert [m["Event"] for m in messages] == ["A", "B"]


def test_parser_keeps_a_trailing_partial_message_until_it_completes():
    parser = MessageParser()
    assert parser.feed(b"Response: Success\r\nActionID: 9\r\n") == []
    assert parser.partial
    (message,) = parser.feed(b"\r\n")
    assert message["ActionID"] == "9"


def test_parser_reads_chanvariable_headers_as_ordinary_headers():
    (event, reply) = parse_messages(
        b"Event: Newchannel\r\nChannel: PJSIP/1001-00000001\r\n"
        b"ChanVariable(PJSIP/1001-00000001): CUSTOMER=42\r\n"
        b"ChanVariable(CDR(foo)): bar\r\n"
        b"ChanVariable: CDR(accountcode)=\r\n\r\n"
        b"Response: Success\r\nActionID: cx-2\r\n\r\n")
    assert event.get("ChanVariable(CDR(foo))") == "bar"
    assert event.get("ChanVariable(PJSIP/1001-00000001)") == "CUSTOMER=42"
    assert event.get_all("ChanVariable") == ["CDR(accountcode)="]
    assert reply.pairs == [("Response", "Success"), ("ActionID", "cx-2")]


def test_parser_is_not_confused_by_status_will_follow_in_a_value():
    messages = parse_messages(
        b"Event: Newchannel\r\nCallerIDName: status will follow\r\nUniqueid: 1.2\r\n\r\n"
        b"Response: Success\r\nActionID: cx-3\r\nMessage: Originate successfully queued\r\n\r\n"
        b"Response: Success\r\nActionID: cx-4\r\nMessage: Message successfully sent\r\n\r\n")
    assert [m.get("ActionID") for m in messages] == [None, "cx-3", "cx-4"]
    assert messages[0]["CallerIDName"] == "status will follow"


def test_parser_keeps_colons_inside_values():
    (message,) = parse_messages(b"Response: Success\r\nTimestamp: 12:30:01\r\n"
                                b"Data: PJSIP/100,30,tT\r\nEmpty:\r\n\r\n")
    assert message.pairs == [("Response", "Success"), ("Timestamp", "12:30:01"),
                             ("Data", "PJSIP/100,30,tT"), ("Empty", "")]


def test_parser_keeps_lines_without_a_colon_aside_and_does_not_wedge_on_follows():
    messages = parse_messages(
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: c1\r\n"
        b"No such command 'foo'\r\n--END COMMAND--\r\n\r\n"
        b"Response: Success\r\nActionID: c2\r\n\r\n")
    assert messages[0].response == "Follows"
    assert messages[0].extra == ["No such command 'foo'", "--END COMMAND--"]
    assert messages[1].pairs == [("Response", "Success"), ("ActionID", "c2")]


def test_message_lookup_ignores_case_and_first_occurrence_wins():
    (message,) = parse_messages(b"response: Success\r\nVariable: A=1\r\nVARIABLE: B=2\r\n\r\n")
    assert message["Response"] == "Success"
    assert message.get("variable") == "A=1"
    assert message.get_all("Variable") == ["A=1", "B=2"]
    assert "ActionID" not in message
    with pytest.raises(KeyError):
        message["ActionID"]
    assert message.as_dict() == {"response": "Success", "Variable": "A=1", "VARIABLE": "B=2"}


def test_parser_takes_the_first_line_as_banner_when_told_to():
    parser = MessageParser(expect_banner=True)
    assert parser.feed(b"Asterisk Call Man") == []
    assert parser.banner is None
    messages = parser.feed(b"ager/5.0.1\r\nResponse: Success\r\nActionID: 1\r\n\r\n")
    assert parser.banner == "Asterisk Call Manager/5.0.1"
    assert messages == [Message([("Response", "Success"), ("ActionID", "1")])]


def test_parser_without_banner_mode_treats_a_banner_line_as_text_of_the_next_message():
    (message,) = parse_messages(b"Asterisk Call Manager/5.0.1\r\nResponse: Success\r\n\r\n")
    assert message.extra == ["Asterisk Call Manager/5.0.1"]
    assert message.pairs == [("Response", "Success")]


def test_parser_refuses_to_buffer_an_endless_line():
    parser = MessageParser()
    with pytest.raises(ValueError):
        parser.feed(b"x" * (wire.MAX_RECEIVED_LINE + 1))


def test_parser_decodes_invalid_utf8_without_failing():
    (message,) = parse_messages(b"Event: Newchannel\r\nCallerIDName: M\xfcller\r\n\r\n")
    assert message["CallerIDName"] == "M\ufffdller"


# --- ActionIDs ----------------------------------------------------------------------------

def test_action_ids_are_unique_within_and_across_sessions():
    one = ami.AmiSession("127.0.0.1", 1, "u", "s")
    two = ami.AmiSession("127.0.0.1", 1, "u", "s")
    ids = [one.new_action_id() for _ in range(100)] + [two.new_action_id() for _ in range(100)]
    assert len(set(ids)) == 200
    assert all("\r" not in i and "\n" not in i and len(i) < 40 for i in ids)


def _scripted_server(replies_for):
    """A one-connection AMI server on loopback: sends the banner, then for each action
    received sends `replies_for(action_id)` (bytes). Returns (port, thread, listener)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"Asterisk Call Manager/5.0.1\r\n")
            parser = MessageParser()
            conn.settimeout(3)
            try:
                while True:
                    data = conn.recv(4096)
                    if not data:
                        return
                    for message in parser.feed(data):
                        conn.sendall(replies_for(message["ActionID"]))
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, listener


def test_action_returns_the_reply_carrying_its_own_action_id_and_skips_the_rest():
    def replies(action_id):
        return (b"Event: Newchannel\r\nUniqueid: 1.1\r\n\r\n"
                + b"Response: Error\r\nActionID: " + action_id.encode() + b"0\r\n"
                  b"Message: Permission denied\r\n\r\n"
                + b"Response: Error\r\nActionID: other\r\nMessage: Permission denied\r\n\r\n"
                + b"Response: Error\r\nMessage: no id at all\r\n\r\n"
                + b"Response: Success\r\nActionID: " + action_id.encode() + b"\r\n"
                  b"Ping: Pong\r\n\r\n")

    port, thread, listener = _scripted_server(replies)
    try:
        with ami.AmiSession("127.0.0.1", port, "u", "s", 1, 2) as session:
            first = session.action("Ping")
            second = session.action("Ping")
        assert first["Ping"] == "Pong" and second["Ping"] == "Pong"
        assert first["ActionID"] != second["ActionID"]
        assert session.socket.fileno() == -1
    finally:
        listener.close()
        thread.join(5)


def test_action_raises_rejected_with_asterisk_message_for_its_own_error_reply():
    def replies(action_id):
        return (b"Response: Error\r\nActionID: " + action_id.encode()
                + b"\r\nMessage: Extension does not exist.\r\n\r\n")

    port, thread, listener = _scripted_server(replies)
    try:
        with ami.AmiSession("127.0.0.1", port, "u", "s", 1, 2) as session:
            with pytest.raises(ami.AmiRejected) as caught:
                session.action("Originate", [("Channel", "PJSIP/1")])
            unchecked = session.action("Originate", [("Channel", "PJSIP/1")], check=False)
        assert caught.value.detail == "Originate refused by Asterisk: Extension does not exist."
        assert caught.value.http_status == 502
        assert unchecked.response == "Error"
    finally:
        listener.close()
        thread.join(5)


def test_action_refuses_injected_headers_before_sending_anything():
    session = ami.AmiSession("127.0.0.1", 1, "u", "s")
    with pytest.raises(ValueError):
        session.action("MessageSend", [("Body", "hi\r\nAction: Originate")])


def test_errors_map_to_http_statuses():
    assert ami.AmiUnavailable("x").http_status == 503
    assert ami.AmiRejected("x").http_status == 502
    assert isinstance(ami.AmiRejected("x"), ami.AmiError)
    assert ami.AmiRejected("why").detail == "why"


# --- originate / send_message field building ---------------------------------------------

ORIGINATE = dict(channel="PJSIP/1001", context="callexchange-outbound", exten="4930123456",
                 caller_id="4930123456", channel_id="1700000000.42", timeout_ms=30000,
                 variables=[("__CX_UNIQUEID", "1700000000.42"), ("CX_PITCH", "1.5")])


def test_originate_fields_are_async_with_channel_id_and_one_variable_header_each():
    fields = ami.originate_fields(**ORIGINATE)
    assert encode_action("Originate", fields) == (
        b"Action: Originate\r\nChannel: PJSIP/1001\r\nContext: callexchange-outbound\r\n"
        b"Exten: 4930123456\r\nPriority: 1\r\nTimeout: 30000\r\n"
        b"ChannelId: 1700000000.42\r\nAsync: true\r\nCallerID: 4930123456\r\n"
        b"Variable: __CX_UNIQUEID=1700000000.42\r\nVariable: CX_PITCH=1.5\r\n\r\n")


@pytest.mark.parametrize("name", ["CX-ANI", "CX ANI", "", "CX=ANI", "CX\r\nANI", "ÄNI"])
def test_originate_refuses_variable_names_outside_letters_digits_underscore(name):
    with pytest.raises(ValueError):
        ami.originate_fields(**dict(ORIGINATE, variables=[(name, "1")]))


@pytest.mark.parametrize("value", ["a,b", "a\rb", "a\nb", "a\0b", 'a"b', "a\\b"])
def test_originate_refuses_variable_values_asterisk_would_split_or_alter(value):
    with pytest.raises(ValueError):
        ami.originate_fields(**dict(ORIGINATE, variables=[("CX_CRM_ID", value)]))


@pytest.mark.parametrize("field", ["channel", "context", "exten", "channel_id", "caller_id"])
def test_originate_refuses_line_breaks_in_any_field(field):
    with pytest.raises(ValueError):
        ami.originate_fields(**dict(ORIGINATE, **{field: "1001\r\nApplication: System"}))


def test_message_fields_put_to_from_and_body():
    assert ami.message_fields("pjsip:1001", "Call lead 42", from_="sip:gw") == [
        ("To", "pjsip:1001"), ("From", "sip:gw"), ("Body", "Call lead 42")]
    with pytest.raises(ValueError):
        ami.message_fields("pjsip:1001", "line one\nline two")


def test_using_a_session_before_connecting_is_a_programming_error():
    with pytest.raises(RuntimeError):
        ami.AmiSession("127.0.0.1", 1, "u", "s").action("Ping")
