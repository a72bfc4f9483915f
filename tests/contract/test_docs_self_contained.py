"""The README, docs/ and every --help stand on their own in a clone: no pointer to files
outside the repository (the product contract and the legacy document live elsewhere),
every repository path they name exists, and the README's test section says what each
skip in tests/ needs."""

import argparse
import re
import subprocess
import sys

import pytest

from paths import LIB, REPO

DOCS = sorted([REPO / "README.md", REPO / "asterisk" / "README.md", REPO / "apache" / "README.md",
               REPO / "apache" / "docs" / "REDOC.md", REPO / "docs" / "openapi.yaml"]
              + list((REPO / "docs").glob("*.md")) + list((REPO / "etc").iterdir()))
OUTSIDE = re.compile(r"\.\./shared|\bSPEC\b|SPEC\.md|§|legacy-api\.txt")


def help_texts():
    """(name, text) of every --help: install.sh, each admin command, the sandbox."""
    sys.path.insert(0, LIB)
    from callexchange.cli import build_parser

    texts = [("install.sh --help", subprocess.run(
        ["bash", str(REPO / "install.sh"), "--help"], capture_output=True, text=True,
        timeout=30).stdout)]
    parser = build_parser()
    texts.append(("callexchange --help", parser.format_help()))
    pending = [("callexchange", parser)]
    while pending:
        name, current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                for word, sub in action.choices.items():
                    texts.append(("%s %s --help" % (name, word), sub.format_help()))
                    pending.append(("%s %s" % (name, word), sub))
    sandbox = subprocess.run([sys.executable, str(REPO / "bin" / "callexchange"), "sandbox",
                              "--help"], capture_output=True, text=True, timeout=30)
    texts.append(("callexchange sandbox --help", sandbox.stdout))
    return texts


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_user_facing_doc_points_outside_the_repo(path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert not OUTSIDE.search(line), "%s:%d: %s" % (path.relative_to(REPO), number, line)


def test_no_help_text_points_outside_the_repo():
    texts = help_texts()
    assert len(texts) > 10 and all(text.strip() for _, text in texts), \
        [name for name, text in texts if not text.strip()]
    for name, text in texts:
        assert not OUTSIDE.search(text), (name, OUTSIDE.search(text).group(0))


TOP_LEVEL = ("docs/", "tests/", "lib/", "apache/", "asterisk/", "cgi-bin/", "agi-bin/",
             "bench/", "etc/", "systemd/", ".ci/")
# bin/ alone would also match a venv's `bin/python3`.
ROOT_FILES = ("install.sh", "run-tests", "requirements.txt", "requirements-runtime.txt",
              "bin/callexchange")


def named_paths(text):
    """Repository paths a document names in backticks (`docs/install.md`)."""
    for token in re.findall(r"`([^`\s]+)`", text):
        token = token.rstrip(".,:;")
        if token.startswith(TOP_LEVEL) or token in ROOT_FILES:
            yield token


@pytest.mark.parametrize("path", [p for p in DOCS if p.suffix == ".md"],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_repository_path_a_doc_names_exists(path):
    base = path.parent if path.parent != REPO and path.name == "README.md" and \
        path.parent.name in ("asterisk", "apache") else REPO
    for token in named_paths(path.read_text(encoding="utf-8")):
        if any(c in token for c in "*{}<>@") or token.endswith("/..."):
            continue  # a pattern or a placeholder, not a path
        assert any(p.exists() for p in candidates(token, base)), \
            "%s names %s" % (path.relative_to(REPO), token)


def candidates(token, base):
    """Where a named path may be: as written, or a Python object in a module
    (`tests/apache_server.render()`, `tests/crm_standin.CrmStandIn`)."""
    token = token.split("(")[0].rstrip("/") or token
    yield REPO / token
    yield base / token
    module, dot, _name = token.rpartition(".")
    if dot and "/" in module:
        yield REPO / (module + ".py")


# What each kind of skip in tests/ needs, as the README's test section must say it.
SKIP_NEEDS = {
    r"apache2|require_apache": "apache2",
    r"mod_wsgi|\"wsgi\"": "libapache2-mod-wsgi-py3",
    r"chromium": "chromium",
    r"shellcheck": "shellcheck",
    r"setfacl": "acl",
    r"asterisklint": "asterisklint",
    r"Asterisk found|sipp|_missing\(": "sip-tester",
    r"root|geteuid": "root",
    r"pylint": "pylint",
    r"asterisk\.agi": "pyst2",
    r"asterisk/\*\.conf|systemd/ units": "install.sh",   # files of this checkout
}


def skip_sites():
    """(file:line, text) of every skip in tests/."""
    found = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path.name == "ci_skips.py" or "contract" in path.parts and path.name == "test_ci_skips.py":
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if re.search(r"pytest\.skip\(|skipif\(|importorskip\(|require_apache\(", line) \
                    and not line.lstrip().startswith(("def ", "#")):
                context = " ".join(lines[max(0, number - 12):number + 1])
                found.append(("%s:%d" % (path.relative_to(REPO), number), context))
    return found


def test_the_readme_says_what_every_skip_needs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Tests"):]
    section = section[:section.index("\n## ", 4)]
    sites = skip_sites()
    assert len(sites) >= 15, sites  # the scan finds them at all
    for site, context in sites:
        needs = [need for pattern, need in SKIP_NEEDS.items() if re.search(pattern, context)]
        assert needs, "%s: a skip the README's test section does not explain: %s" % (site, context)
        for need in needs:
            if need != "install.sh":   # files this checkout ships: never skipped here
                assert need in section, (site, need)
    assert "CI=true" in section and "tests/ci_skips.py" in section
