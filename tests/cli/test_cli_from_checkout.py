"""The admin tool from a checkout, started with a Python that lacks the requirements (the
system's python3): bin/callexchange re-executes itself with the venv that goes with its
tree, and where there is none it, like `python -m callexchange`, says in one line what to
run, never an ImportError traceback.

A bare venv (no packages at all) stands for the system's Python, so the tests do not
depend on what the machine's python3 happens to have."""

import os
import shutil
import subprocess
import sys

import pytest

from paths import REPO
from testconfig import config_text

THE_VENV = sys.prefix   # the tests run in the project's venv, which has the requirements


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    home = tmp_path_factory.mktemp("bare-venv")
    base = getattr(sys, "_base_executable", None) or "/usr/bin/python3"
    subprocess.run([base, "-m", "venv", "--without-pip", str(home)], check=True, timeout=120)
    python = home / "bin" / "python3"
    probe = subprocess.run([str(python), "-c", "import phonenumbers"], capture_output=True)
    assert probe.returncode != 0, "the bare venv must not have phonenumbers"
    return str(python)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "callexchange.ini"
    path.write_text(config_text(tmp_path, 1))
    return str(path)


def run(command, config, cwd=REPO, pythonpath=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "CALLEXCHANGE_REEXEC")}
    env["CALLEXCHANGE_CONFIG"] = config
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(command, cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=60)


def tree_copy(tmp_path, venv=None, venv_name=".venv"):
    """bin/ and lib/ of the checkout in a tree of their own, with `venv` linked in."""
    tree = tmp_path / "app"
    tree.mkdir()
    for part in ("bin", "lib"):
        shutil.copytree(REPO / part, tree / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    if venv:
        link = tree / venv_name if venv_name == ".venv" else tmp_path / venv_name
        link.symlink_to(venv, target_is_directory=True)
    return tree


def test_bin_callexchange_reexecutes_itself_with_the_checkouts_venv(bare_python, config,
                                                                      tmp_path):
    # `check` needs phonenumbers (the default_region); under the bare Python it works
    # only because the tool found .venv and ran itself again with it.
    tree = tree_copy(tmp_path, venv=THE_VENV)
    result = run([bare_python, str(tree / "bin" / "callexchange"), "check", "--no-ami"], config)
    assert "Traceback" not in result.stderr, result.stderr
    assert "ok   config:" in result.stdout, result.stdout + result.stderr
    assert "default_region" not in result.stdout


def test_bin_callexchange_finds_an_installs_venv_beside_the_app(bare_python, config, tmp_path):
    # The install layout: /opt/callexchange/app/bin/callexchange and /opt/callexchange/venv.
    tree = tree_copy(tmp_path, venv=THE_VENV, venv_name="venv")
    result = run([bare_python, str(tree / "bin" / "callexchange"), "check", "--no-ami"], config)
    assert "ok   config:" in result.stdout, result.stdout + result.stderr


def test_bin_callexchange_without_a_venv_says_in_one_line_what_to_run(bare_python, config,
                                                                      tmp_path):
    tree = tree_copy(tmp_path)
    result = run([bare_python, str(tree / "bin" / "callexchange"), "check", "--no-ami"], config,
                 cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "phonenumbers" in lines[0] and bare_python in lines[0]
    # That Python is a venv (the bare one): the line says how to fill it.
    assert "%s -m pip install -r" % bare_python in lines[0]
    assert str(tree / "requirements-runtime.txt") in lines[0] or \
        "app/requirements-runtime.txt" in lines[0]


def test_the_hint_for_a_python_outside_any_venv_names_run_tests(monkeypatch, tmp_path):
    from callexchange.cli import runtime

    monkeypatch.setattr(sys, "prefix", sys.base_prefix)
    monkeypatch.chdir(tmp_path)
    line = runtime.hint(["phonenumbers"], str(tmp_path / "app"), "{python} bin/callexchange")
    assert "\n" not in line
    assert line.startswith("callexchange: phonenumbers is not installed for ")
    assert "no venv in app" in line and "./run-tests" in line
    assert "python3 -m venv .venv && .venv/bin/pip install -r requirements-runtime.txt" in line


def test_python_m_callexchange_says_which_python_to_use(bare_python, config):
    result = run([bare_python, "-m", "callexchange", "check", "--no-ami"], config,
                 pythonpath=str(REPO / "lib"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "phonenumbers" in lines[0]
    assert "-m callexchange" in lines[0] and "bin/python3" in lines[0]


def test_with_the_venvs_python_both_just_run(config):
    for command in ([sys.executable, str(REPO / "bin" / "callexchange"), "check", "--no-ami"],
                    [sys.executable, "-m", "callexchange", "check", "--no-ami"]):
        result = run(command, config, pythonpath=str(REPO / "lib"))
        assert "ok   config:" in result.stdout, result.stdout + result.stderr
        assert result.stderr.count("callexchange:") == 0, result.stderr
