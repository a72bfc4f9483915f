"""A broken server side: a state dir that cannot be used is a 500 JSON reply naming it,
never a call. (A broken config or keys file is the same 500 for every caller, its detail
in the log under an error id: tests/http/test_auth_first.py.)"""

from call_gateway import call


def test_a_state_dir_that_cannot_be_written_is_a_500_naming_it(gateway, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    gateway.configure(state={"dir": str(blocked)})
    body = gateway.post(call(), status=500, expect_errors=True).json
    assert "cannot use the state dir %s" % blocked in body["error"]
    assert gateway.originates() == []
