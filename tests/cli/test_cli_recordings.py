"""`callexchange recordings reindex|find`, through a parser built with
cli_recordings.register() (the way the admin tool wires it)."""

import argparse
import io
import json
import os

import pytest
import webtest

from callexchange.cli import recordings as cli_recordings
from callexchange.http.app import create_app
from callexchange.config import load_config
from testconfig import TEST_API_KEY, config_text

LEAD = "12127773456"
DAYS = ["202407%02d" % n for n in range(1, 11)]


@pytest.fixture
def setup(tmp_path, keys_file):
    path = tmp_path / "callexchange.ini"
    path.write_text(config_text(tmp_path, 5038))
    config = load_config(str(path))
    for number, day in enumerate(DAYS):
        folder = os.path.join(config.recordings.root, day[:4], day[4:6], day[6:])
        os.makedirs(folder)
        name = "out-%s-2001-%s-1%05d-17200000%02d.%d.wav" % (LEAD, day, number, number, number)
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(b"\0" * (44 + 16000 * number))
    return config


def run(config, *argv):
    """The admin tool's `recordings` commands, in-process, with `--config` of `config`."""
    parser = argparse.ArgumentParser(prog="callexchange")
    parser.add_argument("--config")
    cli_recordings.register(parser.add_subparsers(metavar="COMMAND"))
    args = parser.parse_args(["--config", config.path] + list(argv))
    return args.handler(args)


def test_reindex_builds_the_index_with_progress_lines_when_not_a_terminal(setup, capsys):
    assert run(setup, "recordings", "reindex") == 0
    out, err = capsys.readouterr()
    assert out.startswith("indexed 10 recordings in 10 day folders of %s"
                          % setup.recordings.root)
    assert err.splitlines() == ["indexing: %d%% (%d/10 day folders, %d recordings)"
                                % (10 * n, n, n) for n in range(1, 11)]
    assert os.path.exists(os.path.join(setup.state.dir, "recordings-index", "state"))


def test_progress_bar_on_a_terminal_is_redrawn_in_place():
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    stream, clock = Terminal(), iter([0.0, 0.05, 0.1, 0.3, 0.31])
    bar = cli_recordings.ProgressBar(stream, width=10, clock=lambda: next(clock))
    bar.update(1, 4, 100)        # drawn
    bar.update(2, 4, 200)        # too soon after: skipped
    bar.update(3, 4, 300)        # drawn
    bar.update(4, 4, 400)        # the last one is always drawn
    bar.finish()
    frames = stream.getvalue().split("\r")[1:]
    assert len(frames) == 3
    assert frames[0].startswith("[##........]  25%  1/4 day folders  100 recordings")
    assert frames[-1].startswith("[##########] 100%  4/4 day folders  400 recordings")
    assert stream.getvalue().endswith("\n")


def test_find_prints_exactly_what_the_endpoint_answers(setup, capsys):
    app = webtest.TestApp(create_app(config=setup))
    for argv, params in [
        ((LEAD,), {"phone": LEAD}),
        (("+1 212-777-3456", "--from", "2024-07-03", "--to", "2024-07-05"),
         {"phone": "+1 212-777-3456", "from": "2024-07-03", "to": "2024-07-05"}),
        ((LEAD, "--limit", "2"), {"phone": LEAD, "limit": "2"}),
        ((LEAD, "--uniqueid", "1720000004.4"), {"phone": LEAD, "uniqueid": "1720000004.4"}),
        (("19995550000",), {"phone": "19995550000"}),
    ]:
        assert run(setup, "recordings", "find", *argv) == 0
        out = capsys.readouterr().out
        response = app.get("/recorded/v1/find_phone_files.pl", params=params,
                           headers={"api-key": TEST_API_KEY})
        assert out == response.body.decode("utf-8") + "\n"
    assert len(json.loads(out)) == 0


def test_find_with_a_bad_field_prints_the_error_and_fails(setup, capsys):
    assert run(setup, "recordings", "find", "12") == 1
    body = json.loads(capsys.readouterr().out)
    assert body["status"] == "400 Bad Request" and body["field"] == "phone"
    assert run(setup, "recordings", "find", LEAD, "--from", "2024-13-01") == 1
    assert json.loads(capsys.readouterr().out)["field"] == "from"


def test_find_durations_and_order(setup, capsys):
    assert run(setup, "recordings", "find", LEAD) == 0
    reply = json.loads(capsys.readouterr().out)
    assert [r["duration"] for r in reply] == list(range(10))
    assert [r["date"] for r in reply] == ["%s/07/2024" % d[6:] for d in DAYS]


def test_reindex_of_a_missing_root_warns_and_leaves_an_empty_index(setup, capsys):
    import shutil
    shutil.rmtree(setup.recordings.root)
    assert run(setup, "recordings", "reindex") == 0
    out, err = capsys.readouterr()
    assert "does not exist" in err and out.startswith("indexed 0 recordings")


def test_reindex_that_cannot_write_fails_with_a_reason(setup, capsys):
    os.makedirs(setup.state.dir, exist_ok=True)
    with open(os.path.join(setup.state.dir, "recordings-index"), "w") as handle:
        handle.write("not a directory")
    assert run(setup, "recordings", "reindex") == 1
    assert "reindex failed" in capsys.readouterr().err
