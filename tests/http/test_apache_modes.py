"""The HTTP suite runs in both Apache modes (CGI and mod_wsgi): every private Apache a
test starts says which mode it runs, and takes it from the `apache_mode` fixture unless
it is about one mode only (then a comment above it says why)."""

import re

from paths import REPO

CALL = re.compile(r"ApacheServer\(")


def _calls(text):
    """(line number, argument text) of each ApacheServer(...) call in `text`."""
    for match in CALL.finditer(text):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
        yield text.count("\n", 0, match.start()) + 1, text[match.end():end - 1]


def test_every_private_apache_of_the_tests_names_its_mode():
    seen = 0
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path.name in ("apache_server.py", "test_apache_modes.py"):
            continue
        text = path.read_text()
        lines = text.splitlines()
        for number, arguments in _calls(text):
            seen += 1
            where = "%s:%d" % (path.relative_to(REPO), number)
            mode = re.search(r"\bmode=([^,\s)]+)", arguments)
            assert mode, "%s starts an Apache without mode=apache_mode" % where
            # apache_mode, or a helper's own `mode` argument that its caller fills with it.
            if mode.group(1) not in ("apache_mode", "mode"):
                above = " ".join(lines[max(0, number - 4):number - 1])
                assert "only" in above.lower(), (
                    "%s runs one mode only (%s): say why in a comment above it"
                    % (where, mode.group(1)))
    assert seen >= 5


def test_the_mode_fixture_covers_both_modes():
    conftest = (REPO / "tests" / "conftest.py").read_text()
    assert re.search(r'def apache_mode\(request\)', conftest)
    assert 'params=("cgi", "wsgi")' in conftest
