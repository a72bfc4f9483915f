"""The test config every test shares: a known API key, the AMI user the sandbox accepts,
and `config_text`, the INI of a working gateway in a temp dir. A module of its own (not
conftest.py), so test modules import it by a name no other folder's conftest shadows."""

TEST_API_KEY = "test-api-key-5f1c2a9e"
TEST_KEY_LABEL = "tests"
AMI_USERNAME = "cxtest"
AMI_SECRET = "s3cret-for-tests"

_CONFIG_DEFAULTS = {
    "ami": {"host": "127.0.0.1", "username": AMI_USERNAME, "secret": AMI_SECRET,
            "connect_timeout": "1", "timeout": "2"},
    "dial": {"default_region": "US"},
    "ani": {"default": "12125550100, 12125550101", "DE": "4930123456, 4940123456"},
    "recordings": {"base_url": "https://pbx.example.test/wav-files"},
    "webhook": {},
}


def config_text(tmp_path, ami_port, **sections):
    """INI text of a working test config in `tmp_path`: AMI on 127.0.0.1:`ami_port` with
    AMI_USERNAME / AMI_SECRET, keys file `tmp_path/api-keys`, state `tmp_path/state`,
    recordings `tmp_path/recordings`. Keyword arguments override or add keys per section,
    e.g. `config_text(tmp_path, port, dial={"dedupe_seconds": "1"})`; a value of None
    drops the key."""
    merged = {name: dict(values) for name, values in _CONFIG_DEFAULTS.items()}
    merged["ami"]["port"] = str(ami_port)
    merged["auth"] = {"keys_file": str(tmp_path / "api-keys")}
    merged["state"] = {"dir": str(tmp_path / "state")}
    merged["recordings"]["root"] = str(tmp_path / "recordings")
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    lines = []
    for name, values in merged.items():
        lines.append("[%s]" % name)
        lines.extend("%s = %s" % (key, value) for key, value in values.items()
                     if value is not None)
        lines.append("")
    return "\n".join(lines)
