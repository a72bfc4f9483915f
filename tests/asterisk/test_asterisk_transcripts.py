"""The AMI transcripts of tests/fixtures/ami/ (recorded from a real Asterisk 22 by
ami_recorder.py): each is a transcript a replay can use, every case has one, and this
Asterisk still answers the quick cases as recorded (banner, reply texts, the
OriginateResponses of the case's own actions with their Reason and Channel, the close).
The cases that wait for phones to ring out are checked when they are recorded again."""

import json

import pytest

import ami_recorder

FIXTURES = sorted(ami_recorder.FIXTURES.glob("*.json"))
QUICK = [name for name, spec in ami_recorder.CASES.items() if not spec["slow"]]


def test_every_case_has_a_fixture_and_every_fixture_a_case():
    assert sorted(path.stem for path in FIXTURES) == sorted(ami_recorder.CASES)


@pytest.mark.parametrize("path", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_a_fixture_is_a_transcript_a_replay_can_use(path):
    record = ami_recorder.load(path)
    assert record["format"] == ami_recorder.FORMAT and record["case"] == path.stem
    assert record["asterisk"].startswith("Asterisk 22.")
    assert record["user"] == {"username": "callexchange", "read": "call",
                              "write": "originate,message"}
    assert record["sessions"]
    for session in record["sessions"]:
        transcript = session["transcript"]
        assert transcript and all(d in ("client", "server") and isinstance(b, bytes)
                                  for d, _, b in transcript)
        offsets = [offset for _, offset, _ in transcript]
        assert offsets == sorted(offsets) and offsets[0] >= 0
        server = b"".join(b for d, _, b in transcript if d == "server")
        assert server.startswith(b"Asterisk Call Manager/11.0.0\r\n")
        for _, pairs in ami_recorder.messages_of(transcript, "client"):
            assert pairs[0][0] == "Action" and pairs[1][0] == "ActionID", pairs
        # Nothing but a close after the server's last complete message.
        assert server.endswith(b"\r\n"), server[-80:]
    # The bytes survive the JSON text form exactly.
    raw = json.loads(path.read_text())
    for session, loaded in zip(raw["sessions"], record["sessions"]):
        assert [t for _, _, t in session["transcript"]] == \
            [b.decode("latin-1") for _, _, b in loaded["transcript"]]


@pytest.mark.parametrize("name", QUICK)
def test_this_asterisk_still_answers_as_recorded(pbx, name):
    recorded = ami_recorder.load(ami_recorder.FIXTURES / ("%s.json" % name))
    live = ami_recorder.loaded(ami_recorder.record(pbx.bench, name))
    assert ami_recorder.signature(live) == ami_recorder.signature(recorded)
