"""The demo CRM (callexchange.sandbox.democrm, `callexchange webhooks demo-crm`): it logs
each webhook with the verdict a verifying CRM would reach. Signatures here are made by
the official `standardwebhooks` library (and, end to end, by the real deliverer), so the
demo's check is held against the standard, not against our own signer."""

import json
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

from callexchange.config import load_config
from callexchange.sandbox.democrm import DemoCrm, WebhookReceiver, signature_verdict
from callexchange.webhooks.deliverer import Deliverer
from callexchange.webhooks.payload import make_record
from callexchange.webhooks.signing import new_secret, signing_key
from callexchange.webhooks.spool import Spool
from testconfig import config_text
from crm_standin import SECRET
from paths import REPO

BODY = b'{"dialed_number":"4930901820","extension":"2001","caller_id":"1","uniqueid":"1.2"}'


def library_headers(timestamp, secret=SECRET, msg_id="msg_1.2_connect", body=BODY):
    signed = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, tz=timezone.utc),
                                  body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(timestamp)),
            "webhook-signature": signed}


def test_the_verdict_agrees_with_the_official_library():
    key, now = signing_key(SECRET), 1_732_700_000
    assert signature_verdict(key, library_headers(now - 60), BODY, now) == "valid"
    rotating = library_headers(now)
    rotating["webhook-signature"] = "v1,bm9wZQ== " + rotating["webhook-signature"]
    assert signature_verdict(key, rotating, BODY, now) == "valid"
    assert signature_verdict(key, library_headers(now, secret=new_secret()), BODY, now) == \
        "INVALID"
    assert signature_verdict(key, library_headers(now), BODY + b" ", now) == "INVALID"
    stale = signature_verdict(key, library_headers(now - 3600), BODY, now)
    assert stale.startswith("INVALID: timestamp") and "5 minutes" in stale
    assert signature_verdict(key, {"webhook-id": "x"}, BODY, now) == "unsigned"
    assert signature_verdict(None, library_headers(now), BODY, now).startswith("not checked")


def test_the_demo_crm_logs_what_the_deliverer_sends_and_rereads_the_secret(tmp_path):
    log = tmp_path / "demo-webhooks.log"
    path = tmp_path / "callexchange.ini"
    crm = DemoCrm(str(log), str(path))
    receiver = WebhookReceiver(crm.respond).start()
    try:
        url = "http://127.0.0.1:%d/webhooks" % receiver.port
        path.write_text(config_text(tmp_path, 5038, webhook={"url": url, "secret": SECRET}))
        config = load_config(str(path))
        spool = Spool.for_state_dir(config.state.dir)
        occurred = time.time() - 90
        spool.add(make_record("connect", {"CX_UNIQUEID": "1.2", "CX_DESTINATION": "4930901820"},
                              config.webhook, now=occurred))
        assert Deliverer(config, spool).deliver()["delivered"] == 1
        # The admin changes the secret; the deliverer still signs with the old one.
        path.write_text(config_text(tmp_path, 5038, webhook={"url": url,
                                                             "secret": new_secret()}))
        spool.add(make_record("hangup", {"CX_UNIQUEID": "1.2"}, config.webhook))
        assert Deliverer(config, spool).deliver()["delivered"] == 1
        with urllib.request.urlopen(receiver.url, timeout=5) as reply:
            assert json.load(reply)["log"] == str(log)
    finally:
        receiver.stop()
    first, second = [json.loads(line) for line in log.read_text().splitlines()]
    assert first["signature"] == "valid" and second["signature"] == "INVALID"
    assert first["event"] == "connect" and first["webhook_id"] == "msg_1.2_connect"
    assert first["event_time"] == str(int(occurred))
    assert abs(int(first["webhook_timestamp"]) - time.time()) < 60  # the attempt's time
    assert first["body"]["dialed_number"] == "4930901820" and first["path"] == "/webhooks"


def test_the_command_prints_where_it_listens_and_refuses_a_bad_listen_address(tmp_path):
    command = [sys.executable, str(REPO / "bin" / "callexchange"), "--config",
               str(tmp_path / "none.ini"), "webhooks", "demo-crm"]
    bad = subprocess.run(command + ["--listen", "nowhere", "--log", str(tmp_path / "l")],
                         capture_output=True, text=True, timeout=20)
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr
    crm = subprocess.Popen(command + ["--listen", "127.0.0.1:0", "--log", str(tmp_path / "l")],
                           stdout=subprocess.PIPE, text=True)
    try:
        line = crm.stdout.readline()
        assert line.startswith("demo CRM: listening on http://127.0.0.1:")
        assert ":0/" not in line
    finally:
        crm.terminate()
        crm.wait(5)
        crm.stdout.close()
