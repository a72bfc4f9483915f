"""The API reference page renders in a real browser (headless Chromium), offline.

`/api/v1/docs` is a static page: Redoc (vendored in apache/docs/) renders the contract
that the same private Apache serves at /api/v1/openapi.yaml. Chromium runs with a fresh
profile and no network features; the page's Content-Security-Policy would block anything
not from this server, so a rendered page proves it works without Internet access.
"""

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

import apache_server

REDOC = apache_server.REPO / "apache" / "docs" / "redoc.standalone.js"
NOTE = apache_server.REPO / "apache" / "docs" / "REDOC.md"


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("CI is set but chromium is not installed (apt-get install chromium)",
                    pytrace=False)
    pytest.skip("chromium is not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(apache_mode):
    base = apache_server.shared_tempdir("cx-docs-test-")
    config = base / "callexchange.ini"
    config.write_text("# the docs need no config\n")
    config.chmod(0o644)
    (base / "recordings").mkdir(mode=0o755)
    apache = apache_server.ApacheServer(base, config, base / "recordings", mode=apache_mode)
    yield apache
    apache.stop()
    shutil.rmtree(base, ignore_errors=True)


def rendered_dom(url, budget_ms=20000):
    """The DOM of `url` after Chromium ran its scripts for `budget_ms` of virtual time."""
    browser = find_chromium()
    profile = tempfile.mkdtemp(prefix="cx-chromium-")
    try:
        result = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             "--user-data-dir=" + profile, "--virtual-time-budget=%d" % budget_ms,
             "--dump-dom", url],
            capture_output=True, text=True, timeout=120, check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def operations(spec):
    """(method, path, summary, tag) of every operation of the contract."""
    found = []
    for path, item in spec["paths"].items():
        if "$ref" in item:      # "#/components/pathItems/IssueCall"
            target = spec
            for part in item["$ref"].lstrip("#/").split("/"):
                target = target[part]
            item = target
        for method, operation in item.items():
            if method in ("get", "post", "put", "delete", "patch", "head"):
                found.append((method, path, operation["summary"], operation["tags"][0]))
    return found


def test_the_api_reference_renders_every_operation_in_chromium(server):
    spec = json.loads((apache_server.REPO / "docs" / "openapi.yaml").read_text())
    expected = operations(spec)
    assert {path for _, path, _, _ in expected} >= {"/api/v1/asteriskapi.pl",
                                                    "/recorded/v1/find_phone_files.pl"}

    # Redoc shows one tag's operations per page (#/<tag>), its title on every page.
    pages = {}
    for tag in sorted({tag for _, _, _, tag in expected}):
        dom = rendered_dom(server.url + "/api/v1/docs#/" + tag)
        pages[tag] = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))
        assert spec["info"]["title"] in pages[tag], pages[tag][:2000]
    for method, path, summary, tag in expected:
        assert summary in pages[tag], (method, path, summary, pages[tag][:3000])


def test_the_vendored_redoc_is_the_version_and_checksum_the_note_names():
    note = NOTE.read_text()
    digest = hashlib.sha256(REDOC.read_bytes()).hexdigest()
    version = re.search(r"^- version: (\S+)$", note, re.M).group(1)

    assert digest in note
    assert "Version: %s" % version in REDOC.read_text(encoding="utf-8")[:300]
    assert (apache_server.REPO / "apache" / "docs" / "LICENSE.redoc").read_text().startswith(
        "The MIT License")
