"""find_phone_files.pl under test, in process: WebTest (lint on) over the WSGI app and a
real archive of recordings in a temp dir (`Gateway.recording` writes one).
tests/http/conftest.py makes one per test as the `recordings_gateway` fixture. Every reply
`get`/`post` gets is checked for its Content-Type and against the JSON Schemas of
docs/openapi.yaml."""

import json
import os
import struct
import time

import webtest

from callexchange.config import load_config
from callexchange.http.app import create_app
from callexchange.recordings.index import RecordingIndex
from schemas import validate
from testconfig import TEST_API_KEY, config_text

URL = "/recorded/v1/find_phone_files.pl"
JSON_TYPE = "application/json; charset=utf-8"
BASE_URL = "https://pbx.callexchange.net/wav-files"
MISSING = {"status": "400 Bad Request", "icon": "error",
           "error": "Missing parameters: api-key or phone"}
LEAD = "12127773456"

# The legacy document's sample reply, plus the uniqueid we add.
LEGACY_REPLY = [
    {"url": BASE_URL + "/2024/07/03/out-12127773456-unknown-20240703-203742-1720039056.22191.wav",
     "time": "20:37:42", "duration": 25, "date": "03/07/2024", "uniqueid": "1720039056.22191"},
    {"url": BASE_URL + "/2024/07/08/out-12127773456-unknown-20240703-201330-1720037603.22173.wav",
     "time": "20:13:30", "duration": 918, "date": "08/07/2024", "uniqueid": "1720037603.22173"},
    {"url": BASE_URL + "/2024/07/12/out-12127773456-unknown-20240703-150403-1720019043.21754.wav",
     "time": "15:04:03", "duration": 714, "date": "12/07/2024", "uniqueid": "1720019043.21754"},
]


def wav_header(data_bytes, byte_rate=16000, tag=1, block_align=2, bits=16):
    fmt = struct.pack("<HHIIHH", tag, 1, 8000, byte_rate, block_align, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt "
            + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes))


def today(offset_days=0):
    now = time.localtime()
    day = time.localtime(time.mktime((now.tm_year, now.tm_mon, now.tm_mday + offset_days,
                                      12, 0, 0, 0, 0, -1)))
    return "%04d%02d%02d" % day[:3]


class Gateway:
    """The app over a test config whose recordings root is an empty temp dir."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        path = tmp_path / "callexchange.ini"
        path.write_text(config_text(tmp_path, 5038, recordings={"base_url": BASE_URL + "/"}))
        self.config = load_config(str(path))
        self.root = self.config.recordings.root
        os.makedirs(self.root, exist_ok=True)
        self.app = webtest.TestApp(create_app(config=self.config))

    def add(self, day, name, seconds=0, data=None):
        """A recording: a PCM WAV of `seconds` (sparse), or the given bytes."""
        folder = os.path.join(self.root, day[:4], day[4:6], day[6:])
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        with open(path, "wb") as handle:
            if data is not None:
                handle.write(data)
            else:
                handle.write(wav_header(16000 * seconds))
                handle.truncate(44 + 16000 * seconds)
        return path

    def recording(self, day, dst=LEAD, src="unknown", clock="101010", uniqueid="1720000000.1",
                  seconds=0, prefix="out"):
        name = "%s-%s-%s-%s-%s-%s.wav" % (prefix, dst, src, day, clock, uniqueid)
        self.add(day, name, seconds)
        return "%s/%s/%s/%s/%s" % (BASE_URL, day[:4], day[4:6], day[6:], name)

    def legacy_archive(self):
        self.add("20240703", "out-12127773456-unknown-20240703-203742-1720039056.22191.wav", 25)
        self.add("20240708", "out-12127773456-unknown-20240703-201330-1720037603.22173.wav", 918)
        self.add("20240712", "out-12127773456-unknown-20240703-150403-1720019043.21754.wav", 714)

    def index(self):
        return RecordingIndex(self.root, os.path.join(self.config.state.dir, "recordings-index"))

    def get(self, params=None, key=TEST_API_KEY, status=200, url=URL, headers=None):
        sent = dict(headers or {})
        if key is not None:
            sent["api-key"] = key
        response = self.app.get(url, params=params or {}, headers=sent, status=status)
        return check_reply(response)

    def post(self, body, key=TEST_API_KEY, status=200, content_type="application/json",
             url=URL):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = {"api-key": key} if key is not None else {}
        # request(), not post(): WebTest re-encodes a multipart body handed to post().
        response = self.app.request(url, method="POST", body=body, headers=headers,
                                    content_type=content_type, status=status)
        return check_reply(response)


def check_reply(response):
    if response.status_int == 204:
        assert response.body == b""
        return None
    assert response.headers["Content-Type"] == JSON_TYPE
    payload = json.loads(response.body.decode("utf-8"))
    if isinstance(payload, list) and payload and "jsonrpc" in payload[0]:
        validate("JsonRpcRecordingsBatchResponse", payload)
    elif isinstance(payload, list):
        validate("RecordingList", payload)
    elif "jsonrpc" in payload:
        validate("JsonRpcRecordingsResponse", payload)
    else:
        validate("RecordingsError", payload)
        assert payload["status"] == response.status
    return payload
