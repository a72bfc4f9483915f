"""Caller ID rotation: the least-used number of the region's pool, flagged numbers
and daily limits (check_spam), counted exactly under concurrent requests."""

import threading

import webtest

from call_gateway import DEFAULT_POOL, call


def test_ani_rotates_to_the_least_used_number_and_counts_exactly(gateway):
    chosen = [gateway.post(call("1212777340%d" % i)).json["caller_id"] for i in range(3)]
    assert chosen == [DEFAULT_POOL[0], DEFAULT_POOL[1], DEFAULT_POOL[0]]
    assert gateway.usage() == {DEFAULT_POOL[0]: 2, DEFAULT_POOL[1]: 1}


def test_check_spam_false_when_every_ani_is_flagged(gateway, tmp_path):
    flagged = tmp_path / "flagged.txt"
    flagged.write_text("# flagged by the carrier\n+12125550100\n12125550101\n")
    gateway.configure(ani={"flagged_file": str(flagged)})
    body = gateway.post(call()).json
    assert body["check_spam"] == "false"
    assert body["caller_id"] in DEFAULT_POOL
    assert len(gateway.originates()) == 1


def test_flagged_number_is_skipped_while_a_clean_one_is_left(gateway, tmp_path):
    flagged = tmp_path / "flagged.txt"
    flagged.write_text("12125550100\n")
    gateway.configure(ani={"flagged_file": str(flagged)})
    body = gateway.post(call()).json
    assert (body["caller_id"], body["check_spam"]) == (DEFAULT_POOL[1], "true")


def test_check_spam_false_when_every_ani_is_over_its_daily_limit(gateway):
    gateway.configure(ani={"daily_limit": "1"})
    spam = [gateway.post(call("1212777340%d" % i)).json["check_spam"] for i in range(3)]
    assert spam == ["true", "true", "false"]
    assert sum(gateway.usage().values()) == 3


def test_concurrent_requests_count_every_ani_use_exactly_once(gateway):
    replies, failures = [], []
    wsgi_app = gateway.app.app

    def one(index):
        try:
            app = webtest.TestApp(wsgi_app)
            replies.append(gateway.post(call("1212777%04d" % index), app=app).json)
        except Exception as error:  # reported below, in the main thread
            failures.append(error)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert len(replies) == 20
    usage = gateway.usage()
    assert sum(usage.values()) == 20
    assert usage == {DEFAULT_POOL[0]: 10, DEFAULT_POOL[1]: 10}
    assert len({reply["uniqueid"] for reply in replies}) == 20
    assert len(gateway.originates()) == 20
