"""find_phone_files.pl end to end, in process: WebTest (lint on) over the WSGI app and a
real archive of recordings in a temp dir. Every reply is checked for its Content-Type and
against the JSON Schemas of docs/openapi.yaml."""

import os
import struct
import threading
import time

import pytest
import webtest

from callexchange.http.app import create_app
from recordings_gateway import BASE_URL, LEAD, LEGACY_REPLY, MISSING, URL, check_reply, today
from testconfig import TEST_API_KEY


@pytest.fixture
def gateway(recordings_gateway):
    return recordings_gateway


# --- the legacy reply, every way of asking ------------------------------------------------

def test_get_with_query_string_gives_the_legacy_reply(gateway):
    gateway.legacy_archive()
    assert gateway.get({"phone": LEAD}) == LEGACY_REPLY


def test_url_without_pl_and_national_or_formatted_numbers(gateway):
    gateway.legacy_archive()
    assert gateway.get({"phone": "2127773456"}, url="/recorded/v1/find_phone_files") == LEGACY_REPLY
    assert gateway.get({"phone": "+1 (212) 777-3456"}) == LEGACY_REPLY
    assert gateway.get({"phone": "0012127773456"}) == LEGACY_REPLY


def test_post_json_as_the_legacy_document_shows(gateway):
    gateway.legacy_archive()
    assert gateway.post({"phone": "12127773456"}) == LEGACY_REPLY
    assert gateway.post({" Phone ": 12127773456}, content_type="text/plain") == LEGACY_REPLY


def test_post_form_with_the_key_in_the_body(gateway):
    gateway.legacy_archive()
    body = "phone=12127773456&api_key=%s" % TEST_API_KEY
    assert gateway.post(body, key=None, content_type="application/x-www-form-urlencoded") \
        == LEGACY_REPLY
    assert gateway.post({"phone": LEAD, "api-key": TEST_API_KEY}, key=None) == LEGACY_REPLY


def test_post_without_body_reads_the_query_string(gateway):
    gateway.legacy_archive()
    response = gateway.app.post(URL + "?phone=12127773456", headers={"api-key": TEST_API_KEY})
    assert check_reply(response) == LEGACY_REPLY


def test_jsonrpc_single_and_alias(gateway):
    gateway.legacy_archive()
    reply = gateway.post({"jsonrpc": "2.0", "method": "find_phone_files",
                          "params": {"phone": LEAD}, "id": 7})
    assert reply == {"jsonrpc": "2.0", "result": LEGACY_REPLY, "id": 7}
    reply = gateway.post({"jsonrpc": "2.0", "method": "recordings",
                          "params": {"phone": LEAD, "limit": 1}, "id": "a"})
    assert reply["result"] == LEGACY_REPLY[-1:]


def test_jsonrpc_batch_with_errors_and_notifications(gateway):
    gateway.legacy_archive()
    batch = [
        {"jsonrpc": "2.0", "method": "find_phone_files", "params": {"phone": LEAD}, "id": 1},
        {"jsonrpc": "2.0", "method": "recordings", "params": {"phone": "19995550000"}, "id": 2},
        {"jsonrpc": "2.0", "method": "find_phone_files", "params": {}, "id": 3},
        {"jsonrpc": "2.0", "method": "find_phone_files", "params": {"phone": "12"}, "id": 4},
        {"jsonrpc": "2.0", "method": "originate", "params": {"phone": LEAD}, "id": 5},
        {"jsonrpc": "2.0", "method": "find_phone_files", "params": {"phone": LEAD}},
    ]
    replies = gateway.post(batch)
    assert [r["id"] for r in replies] == [1, 2, 3, 4, 5]
    assert replies[0]["result"] == LEGACY_REPLY
    assert replies[1]["result"] == []
    assert replies[2]["error"]["code"] == -32602 and replies[2]["error"]["data"] == MISSING
    assert replies[3]["error"]["data"]["field"] == "phone"
    assert replies[4]["error"]["code"] == -32601
    notification = {"jsonrpc": "2.0", "method": "recordings", "params": {"phone": LEAD}}
    assert gateway.post([notification], status=204) is None
    assert gateway.post(notification, status=204) is None


def test_jsonrpc_bad_key_and_parse_error(gateway):
    reply = gateway.post({"jsonrpc": "2.0", "method": "recordings",
                          "params": {"phone": LEAD}, "id": 1}, key="wrong")
    assert reply["error"]["code"] == -32001
    assert reply["error"]["data"] == {"status": "401 Unauthorized", "icon": "error",
                                      "error": "Invalid api-key"}
    reply = gateway.post('{"jsonrpc": "2.0", "method": ', status=200)
    assert reply["error"]["code"] == -32700 and reply["id"] is None


# --- errors, exactly ----------------------------------------------------------------------

def test_missing_key_or_phone_is_the_legacy_400(gateway):
    assert gateway.get({"phone": LEAD}, key=None, status=400) == MISSING
    assert gateway.get({}, status=400) == MISSING
    assert gateway.get({"phone": "  "}, status=400) == MISSING
    assert gateway.post({}, status=400) == MISSING
    assert gateway.post({"phone": LEAD}, key=None, status=400) == MISSING
    assert gateway.post("", key=None, status=400) == MISSING


def test_unknown_key_is_401(gateway):
    assert gateway.get({"phone": LEAD}, key="not-a-key", status=401) == \
        {"status": "401 Unauthorized", "icon": "error", "error": "Invalid api-key"}


def test_key_in_the_query_string_is_refused(gateway):
    reply = gateway.get({"phone": LEAD, "api-key": TEST_API_KEY}, key=None, status=400)
    assert "never in the URL" in reply["error"]


@pytest.mark.parametrize("params, field", [
    ({"phone": "12"}, "phone"), ({"phone": "123456789012345678901"}, "phone"),
    ({"phone": "call-me"}, "phone"), ({"phone": "2001\r\nAction: Originate"}, "phone"),
    ({"phone": LEAD, "from": "2024-02-30"}, "from"), ({"phone": LEAD, "to": "yesterday"}, "to"),
    ({"phone": LEAD, "from": "2024-07-02", "to": "2024-07-01"}, "from"),
    ({"phone": LEAD, "limit": "0"}, "limit"), ({"phone": LEAD, "limit": "1001"}, "limit"),
    ({"phone": LEAD, "limit": "x"}, "limit"), ({"phone": LEAD, "uniqueid": "*"}, "uniqueid"),
])
def test_bad_fields_are_400_naming_the_field(gateway, params, field):
    reply = gateway.get(params, status=400)
    assert reply["field"] == field and reply["icon"] == "error"
    reply = gateway.post(params, status=400)
    assert reply["field"] == field


def test_a_nul_in_the_phone_is_refused(gateway):
    assert gateway.post({"phone": "2001\u0000"}, status=400)["field"] == "phone"


def test_malformed_json_duplicate_names_wrong_method(gateway):
    assert "Malformed JSON" in gateway.post('{"phone": ', status=400)["error"]
    assert gateway.post('{"phone": "1", " PHONE": "2"}', status=400)["field"] == "phone"
    response = gateway.app.put(URL, headers={"api-key": TEST_API_KEY}, status=405)
    assert response.headers["Allow"] == "GET, HEAD, POST"
    check_reply(response)
    response = gateway.app.post(URL, params=b"{" + b" " * 70000 + b"}",
                                content_type="application/json", status=413)
    check_reply(response)


def test_no_match_is_an_empty_list(gateway):
    gateway.legacy_archive()
    assert gateway.get({"phone": "19995550000"}) == []
    assert gateway.get({"phone": "912127773456999"}) == []


# --- from, to, limit, uniqueid ------------------------------------------------------------

def test_from_and_to_are_inclusive_day_folders(gateway):
    gateway.legacy_archive()
    dates = lambda reply: [r["date"] for r in reply]    # noqa: E731
    assert dates(gateway.get({"phone": LEAD, "from": "2024-07-08"})) == ["08/07/2024", "12/07/2024"]
    assert dates(gateway.get({"phone": LEAD, "to": "2024-07-08"})) == ["03/07/2024", "08/07/2024"]
    assert dates(gateway.get({"phone": LEAD, "from": "2024-07-08", "to": "2024-07-08"})) == \
        ["08/07/2024"]
    assert gateway.get({"phone": LEAD, "from": "2025-01-01"}) == []


def test_limit_keeps_the_newest_listed_oldest_first(gateway):
    gateway.legacy_archive()
    assert gateway.get({"phone": LEAD, "limit": "2"}) == LEGACY_REPLY[1:]
    assert gateway.post({"phone": LEAD, "limit": 1}) == LEGACY_REPLY[2:]


def test_uniqueid_selects_one_call(gateway):
    gateway.legacy_archive()
    assert gateway.get({"phone": LEAD, "uniqueid": "1720037603.22173"}) == [LEGACY_REPLY[1]]
    assert gateway.get({"phone": LEAD, "uniqueid": "1720037603.2217"}) == []


def test_same_day_sorted_by_time_then_name(gateway):
    late = gateway.recording("20240703", clock="235959", uniqueid="1.3")
    early = gateway.recording("20240703", clock="000001", uniqueid="1.1", src="2001",
                              prefix="in")
    middle = gateway.recording("20240703", clock="120000", uniqueid="1.2")
    assert [r["url"] for r in gateway.get({"phone": LEAD})] == [early, middle, late]


def test_name_without_time_uses_the_file_mtime(gateway):
    path = gateway.add("20240703", "out-12127773456-2001-1720039056.5.wav", 3)
    stamp = time.mktime((2024, 7, 3, 9, 8, 7, 0, 0, -1))
    os.utime(path, (stamp, stamp))
    [entry] = gateway.get({"phone": LEAD})
    assert (entry["time"], entry["duration"], entry["date"], entry["uniqueid"]) == \
        ("09:08:07", 3, "03/07/2024", "1720039056.5")


def test_durations_of_each_format_and_of_a_file_being_written(gateway):
    gateway.add("20240703", "out-12127773456-2001-20240703-100000-1.1.gsm", data=b"\xd0" * 33 * 500)
    wav49 = (b"RIFF" + struct.pack("<I", 0) + b"WAVE" + b"fmt " + struct.pack("<I", 20)
             + struct.pack("<HHIIHHHH", 0x31, 1, 8000, 1625, 65, 0, 2, 320)
             + b"data" + struct.pack("<I", 0) + b"\0" * 1625 * 4)        # still being written
    gateway.add("20240703", "out-12127773456-2001-20240703-110000-1.2.WAV", data=wav49)
    frame = struct.pack(">I", 0xFFFB9064) + b"\0" * 413                   # 128k, 44.1 kHz
    gateway.add("20240703", "out-12127773456-2001-20240703-120000-1.3.mp3", data=frame * 383)
    gateway.add("20240703", "out-12127773456-2001-20240703-130000-1.4.wav", data=b"")
    assert [r["duration"] for r in gateway.get({"phone": LEAD})] == [10, 4, 10, 0]


def test_numbers_holding_dashes_are_found_by_either_number(gateway):
    day = "20240706"
    names = ["out-212-777-3456-2001-20240706-121212-1720300000.4.wav",
             "out-+1-212-777-3456-2003-20240706-121213-1720300001.5.wav",
             "out-2127773456-20-01-20240706-121214-1720300002.6.wav",
             "from-internal-2004-12127773456-20240706-121215-1720300003.7.wav"]
    for name in names + ["out-912127773456999-2005-20240706-121216-1720300004.8.wav"]:
        gateway.add(day, name, 1)
    urls = ["%s/2024/07/06/%s" % (BASE_URL, name) for name in names]

    def found(phone):
        return [entry["url"] for entry in gateway.get({"phone": phone})]
    assert found(LEAD) == urls
    assert found("+1 (212) 777-3456") == found("2127773456") == urls
    assert found("2001") == [urls[0], urls[2]]
    assert found("2003") == [urls[1]]
    assert found("2004") == [urls[3]]
    reply = gateway.get({"phone": "212-777-3456", "uniqueid": "1720300001.5"})
    assert [(r["url"], r["time"], r["date"], r["duration"]) for r in reply] == \
        [(urls[1], "12:12:13", "06/07/2024", 1)]


def test_folders_and_symlinks_are_never_returned(gateway):
    real = gateway.recording("20240703", clock="100000", uniqueid="1.1", seconds=1)
    folder = os.path.join(gateway.root, "2024", "07", "03")
    os.makedirs(os.path.join(folder, "out-%s-unknown-20240703-100001-1.2.wav" % LEAD))
    os.symlink("/etc/passwd", os.path.join(folder, "out-%s-unknown-20240703-100002-1.3.wav"
                                           % LEAD))
    os.symlink(real.rpartition("/")[2],       # to a real recording of the archive
               os.path.join(folder, "out-%s-unknown-20240703-100003-1.4.wav" % LEAD))
    assert [r["url"] for r in gateway.get({"phone": LEAD})] == [real]


def test_a_recording_replaced_by_a_symlink_or_folder_after_indexing_is_not_returned(gateway):
    kept = gateway.recording("20240703", clock="100000", uniqueid="1.1", seconds=1)
    swapped = gateway.recording("20240703", clock="100001", uniqueid="1.2", seconds=1)
    emptied = gateway.recording("20240703", clock="100002", uniqueid="1.3", seconds=1)
    newest = gateway.recording("20240712", clock="100000", uniqueid="1.4", seconds=1)
    assert [r["url"] for r in gateway.get({"phone": LEAD})] == [kept, swapped, emptied, newest]
    # An old day folder, so the index has not looked again: the lookup's check catches it.
    folder = os.path.join(gateway.root, "2024", "07", "03")
    swapped_path = os.path.join(folder, swapped.rpartition("/")[2])
    emptied_path = os.path.join(folder, emptied.rpartition("/")[2])
    assert ("20240703", swapped.rpartition("/")[2]) in gateway.index().find(LEAD)  # indexed
    os.unlink(swapped_path)
    os.symlink(kept.rpartition("/")[2], swapped_path)
    os.unlink(emptied_path)
    os.mkdir(emptied_path)
    assert [r["url"] for r in gateway.get({"phone": LEAD})] == [kept, newest]
    assert gateway.index().find(LEAD) == [("20240703", kept.rpartition("/")[2]),
                                          ("20240712", newest.rpartition("/")[2])]


# --- staying right as the archive changes -------------------------------------------------

def test_a_new_recording_is_found_by_the_next_lookup(gateway):
    gateway.legacy_archive()
    assert len(gateway.get({"phone": LEAD})) == 3
    url = gateway.recording(today(), clock="090000", uniqueid="1800000000.1", seconds=2)
    reply = gateway.get({"phone": LEAD})
    assert len(reply) == 4 and reply[-1]["url"] == url and reply[-1]["duration"] == 2


def test_a_deleted_recording_is_never_returned_and_leaves_the_index(gateway):
    gateway.legacy_archive()
    assert len(gateway.get({"phone": LEAD})) == 3
    os.unlink(os.path.join(gateway.root, "2024", "07", "08",
                           "out-12127773456-unknown-20240703-201330-1720037603.22173.wav"))
    assert gateway.get({"phone": LEAD}) == [LEGACY_REPLY[0], LEGACY_REPLY[2]]
    assert gateway.index().state().day("20240708").count == 0
    assert gateway.index().find(LEAD) == [
        ("20240703", "out-12127773456-unknown-20240703-203742-1720039056.22191.wav"),
        ("20240712", "out-12127773456-unknown-20240703-150403-1720019043.21754.wav")]


def test_limit_counts_only_recordings_that_still_exist(gateway):
    gateway.legacy_archive()
    gateway.get({"phone": LEAD})
    os.unlink(os.path.join(gateway.root, "2024", "07", "12",
                           "out-12127773456-unknown-20240703-150403-1720019043.21754.wav"))
    assert gateway.get({"phone": LEAD, "limit": 2}) == LEGACY_REPLY[:2]


def test_garbage_in_the_index_still_gives_the_right_answer_and_a_rebuilt_index(gateway):
    gateway.legacy_archive()
    gateway.get({"phone": LEAD})
    directory = gateway.index().directory
    for name in os.listdir(directory):
        if name != "lock":
            with open(os.path.join(directory, name), "r+b") as handle:
                handle.seek(10)
                handle.write(os.urandom(64))
    assert gateway.get({"phone": LEAD}) == LEGACY_REPLY
    assert gateway.index().state() is not None
    assert gateway.index().find(LEAD) == gateway.index().scan(LEAD)


def test_a_deleted_index_is_rebuilt(gateway):
    gateway.legacy_archive()
    gateway.get({"phone": LEAD})
    directory = gateway.index().directory
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))
    os.rmdir(directory)
    assert gateway.get({"phone": LEAD}) == LEGACY_REPLY
    assert gateway.index().state() is not None


def test_concurrent_reindex_and_lookups_are_always_right(gateway):
    gateway.legacy_archive()
    for n in range(300):
        gateway.recording("2024%02d%02d" % (1 + n % 6, 1 + n % 28), dst="1415555%04d" % n,
                          uniqueid="1.%d" % n)
    gateway.get({"phone": LEAD})
    errors, stop = [], threading.Event()

    def lookups():
        app = webtest.TestApp(create_app(config=gateway.config))
        try:
            while not stop.is_set():
                response = app.get(URL, params={"phone": LEAD},
                                   headers={"api-key": TEST_API_KEY})
                if response.json != LEGACY_REPLY:
                    errors.append(response.json)
                response = app.get(URL, params={"phone": "14155550042"},
                                   headers={"api-key": TEST_API_KEY})
                if [r["uniqueid"] for r in response.json] != ["1.42"]:
                    errors.append(response.json)
        except Exception as error:      # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=lookups) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(5):
            gateway.index().rebuild()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []


def test_broken_config_is_a_500_json(tmp_path):
    app = webtest.TestApp(create_app(config_path=str(tmp_path / "missing.ini")))
    # The app logs the config problem to wsgi.errors (for the admin): expected here.
    response = app.get(URL, params={"phone": LEAD}, headers={"api-key": "k"}, status=500,
                       expect_errors=True)
    assert check_reply(response)["status"] == "500 Internal Server Error"


def test_head_answers_like_get_without_a_body(tmp_path):
    from callexchange.http.app import create_app
    from testconfig import TEST_API_KEY, config_text
    import webtest
    path = tmp_path / "c.ini"
    path.write_text(config_text(tmp_path, 5038))
    from callexchange import keys
    keys.add_key(str(tmp_path / "api-keys"), "t", TEST_API_KEY)
    app = webtest.TestApp(create_app(str(path)))
    get = app.get("/recorded/v1/find_phone_files.pl?phone=12127773456",
                  headers={"api-key": TEST_API_KEY}, status=200)
    head = app.head("/recorded/v1/find_phone_files.pl?phone=12127773456",
                    headers={"api-key": TEST_API_KEY}, status=200)
    assert head.body == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert head.headers["Content-Length"] == str(len(get.body))
