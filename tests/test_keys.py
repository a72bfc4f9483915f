"""keys.py: API keys stored as SHA-256 digests, found in constant time."""

import hashlib
import os
import stat

import pytest

from callexchange import keys


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "etc" / "api-keys")


def test_add_list_revoke(path):
    keys.add_key(path, "crm-a", "key-a")
    keys.add_key(path, "crm.b@example", "key-b")
    assert [(entry.label, entry.digest) for entry in keys.read_keys(path)] == [
        ("crm-a", hashlib.sha256(b"key-a").hexdigest()),
        ("crm.b@example", hashlib.sha256(b"key-b").hexdigest())]
    keys.revoke_key(path, "crm-a")
    assert [entry.label for entry in keys.read_keys(path)] == ["crm.b@example"]
    assert keys.find_label(path, "key-a") is None
    assert keys.find_label(path, "key-b") == "crm.b@example"


def test_only_digests_reach_the_disk(path):
    secret = "clear-text-key-8d1f0a"
    keys.add_key(path, "crm", secret)
    with open(path, "rb") as handle:
        stored = handle.read()
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored
    assert os.listdir(os.path.dirname(path)) == ["api-keys"]  # no temporary file left


def test_created_is_recorded_in_utc(path):
    keys.add_key(path, "crm", "k1")
    [entry] = keys.read_keys(path)
    created = entry.created
    assert created.endswith("Z") and len(created) == 20


def test_keys_file_is_mode_0640_whatever_the_umask(path):
    previous = os.umask(0o077)
    try:
        keys.add_key(path, "crm", "k1")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_rewriting_keeps_the_mode_an_admin_chose(path):
    keys.add_key(path, "crm", "k1")
    os.chmod(path, 0o600)
    keys.add_key(path, "crm2", "k2")
    keys.revoke_key(path, "crm")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_fresh_key_is_generated_and_returned_once(path):
    key = keys.add_key(path, "crm")
    assert len(key) == 64 and int(key, 16) >= 0
    assert keys.find_label(path, key) == "crm"
    assert keys.add_key(path, "crm2") != key


def test_find_label(path):
    keys.add_key(path, "one", "k-one")
    keys.add_key(path, "two", "k-two")
    assert keys.find_label(path, "k-two") == "two"
    assert keys.find_label(path, "k-one") == "one"
    for wrong in ("k-three", "K-ONE", "k-one ", "", None):
        assert keys.find_label(path, wrong) is None


def test_find_label_with_no_keys_file(tmp_path):
    assert keys.find_label(str(tmp_path / "none"), "k") is None


def test_find_label_compares_every_stored_digest(path, monkeypatch):
    for index in range(5):
        keys.add_key(path, "crm%d" % index, "key-%d" % index)
    compared = []
    real = keys.compare_digest

    def counting(a, b):
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(keys, "compare_digest", counting)
    assert keys.find_label(path, "key-0") == "crm0"     # first match, yet all compared
    assert len(compared) == 5


def test_key_from_public_key_file_is_the_hex_sha256_of_its_bytes(tmp_path, path):
    public = tmp_path / "client.pub"
    content = (b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n"
               b"-----END PUBLIC KEY-----\n")
    public.write_bytes(content)
    derived = keys.key_from_public_key_file(str(public))
    assert derived == hashlib.sha256(content).hexdigest()
    keys.add_key(path, "legacy", derived)
    assert keys.find_label(path, derived) == "legacy"


@pytest.mark.parametrize("label", ["", "has space", "tab\tlabel", "x" * 65, "semi;colon",
                                   "\u00e9t\u00e9"])
def test_bad_labels_are_refused(path, label):
    with pytest.raises(ValueError):
        keys.add_key(path, label, "k")


@pytest.mark.parametrize("key", ["has space", "tab\tkey", "new\nline", "\x7f"])
def test_keys_with_blanks_or_control_characters_are_refused(path, key):
    with pytest.raises(ValueError):
        keys.add_key(path, "crm", key)


def test_label_in_use_is_refused(path):
    keys.add_key(path, "crm", "k1")
    with pytest.raises(ValueError, match="already in use"):
        keys.add_key(path, "crm", "k2")


def test_same_key_under_two_labels_is_refused(path):
    keys.add_key(path, "crm", "k1")
    with pytest.raises(ValueError, match="already stored"):
        keys.add_key(path, "crm2", "k1")


def test_revoking_an_unknown_label_is_a_key_error(path):
    keys.add_key(path, "crm", "k1")
    with pytest.raises(KeyError):
        keys.revoke_key(path, "nobody")


def test_comments_and_blank_lines_are_skipped(path):
    digest = hashlib.sha256(b"k").hexdigest()
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        handle.write("# a comment\n\n  # indented comment\ncrm\t%s\n" % digest.upper())
    assert keys.read_keys(path) == [("crm", digest, "", keys.NO_LIMITS)]
    assert keys.find_label(path, "k") == "crm"


@pytest.mark.parametrize("line", ["crm", "crm\tnot-hex", "crm\t" + "g" * 64,
                                  "crm\t" + "a" * 63])
def test_malformed_line_names_file_and_line(path, line):
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        handle.write("# keys\n%s\n" % line)
    with pytest.raises(keys.KeyFileError, match="%s:2:" % path):
        keys.read_keys(path)


def test_digest_is_sha256_hex_of_utf8():
    assert keys.digest("cl\u00e9") == hashlib.sha256("cl\u00e9".encode("utf-8")).hexdigest()


# --- per-key limits ----------------------------------------------------------------------

def test_limits_are_stored_in_a_fourth_field_and_read_back(path):
    limits = keys.KeyLimits(("GB", "DE"), 30, 2000)
    keys.add_key(path, "crm", "k1", limits)
    keys.add_key(path, "plain", "k2")
    with open(path) as handle:
        lines = [line for line in handle.read().splitlines() if not line.startswith("#")]
    assert lines[0].split("\t")[3] == \
        "allow_regions=GB,DE max_calls_per_minute=30 max_calls_per_day=2000"
    assert len(lines[1].split("\t")) == 3         # no limits: the old three-field line
    assert [entry.limits for entry in keys.read_keys(path)] == [limits, keys.NO_LIMITS]
    assert keys.entry_for(path, "crm").limits == limits
    assert keys.entry_for(path, "nobody") is None


def test_an_old_keys_file_reads_the_same(path):
    digest = hashlib.sha256(b"k").hexdigest()
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        handle.write("crm\t%s\t2023-05-01T10:00:00Z\nbare\t%s\n"
                     % (digest, hashlib.sha256(b"j").hexdigest()))
    assert [(e.label, e.created, e.limits) for e in keys.read_keys(path)] == [
        ("crm", "2023-05-01T10:00:00Z", keys.NO_LIMITS), ("bare", "", keys.NO_LIMITS)]
    assert keys.find_label(path, "k") == "crm"
    keys.add_key(path, "new", "n", keys.KeyLimits(None, None, 5))    # rewriting keeps them
    assert keys.find_label(path, "j") == "bare"


def test_set_limits_changes_one_key_only(path):
    keys.add_key(path, "a", "ka", keys.KeyLimits(None, 5, None))
    keys.add_key(path, "b", "kb")
    keys.set_limits(path, "b", keys.KeyLimits(("FR",), None, 10))
    assert keys.entry_for(path, "a").limits == keys.KeyLimits(None, 5, None)
    assert keys.entry_for(path, "b").limits == keys.KeyLimits(("FR",), None, 10)
    assert keys.find_label(path, "kb") == "b"
    with pytest.raises(KeyError):
        keys.set_limits(path, "nobody", keys.NO_LIMITS)


@pytest.mark.parametrize("field, problem", [
    ("max_calls_per_minute=0", "1 to 1000"), ("max_calls_per_minute=1001", "1 to 1000"),
    ("max_calls_per_day=-3", "whole number"), ("max_calls_per_day=ten", "whole number"),
    ("allow_regions=GBR", "two-letter"), ("allow_regions=*", "lists regions"),
    ("colour=blue", "expected"), ("max_calls_per_day", "expected"),
    ("max_calls_per_day=1 max_calls_per_day=2", "twice"),
])
def test_a_malformed_limits_field_names_file_and_line(path, field, problem):
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as handle:
        handle.write("# keys\ncrm\t%s\t\t%s\n" % (hashlib.sha256(b"k").hexdigest(), field))
    with pytest.raises(keys.KeyFileError, match="%s:2: limits: .*%s" % (path, problem)):
        keys.read_keys(path)


def test_limits_parse_normalises_regions():
    assert keys.KeyLimits.parse("allow_regions=gb,de,GB").allow_regions == ("GB", "DE")
    assert keys.KeyLimits.parse("allow_regions=001").allow_regions == ("001",)


def test_the_keys_file_is_parsed_again_whenever_it_changed(tmp_path):
    """read_keys keeps its last parse while the file is unchanged; any change, a same-size
    rewrite in place just after a read included, is seen by the next read."""
    import os
    import time

    from callexchange import keys

    path = tmp_path / "api-keys"
    path.write_text("one\t%s\t2024-07-03T00:00:00Z\n" % keys.digest("k1"))
    old = time.time() - 10
    os.utime(path, (old, old))                      # old enough to be cached
    assert [e.label for e in keys.read_keys(str(path))] == ["one"]
    assert keys._PARSED[str(path)][1][0].label == "one"
    # Same size, same inode, at once: the mtime moved, so it is parsed again.
    with open(path, "r+") as handle:
        handle.write("two\t%s\t2024-07-03T00:00:00Z\n" % keys.digest("k2"))
    assert [e.label for e in keys.read_keys(str(path))] == ["two"]
    assert keys.find_label(str(path), "k2") == "two" and keys.find_label(str(path), "k1") is None
    # Freshly written files are not cached (a second same-size rewrite within a tick).
    with open(path, "r+") as handle:
        handle.write("six\t%s\t2024-07-03T00:00:00Z\n" % keys.digest("k6"))
    assert [e.label for e in keys.read_keys(str(path))] == ["six"]
    os.unlink(path)
    assert keys.read_keys(str(path)) == []
