"""Running the admin tool with a Python that has the requirements.

From a checkout, `bin/callexchange` and `python3 -m callexchange` are often started with
the system's python3, which lacks phonenumbers and requests (they live in the venv that
./run-tests or install.sh makes). Rather than an ImportError traceback halfway through a
command, bin/callexchange re-executes itself with the venv's Python when it finds one,
and both say in one line what to run when it cannot.

The venvs looked for, relative to the tree holding bin/ and lib/: `.venv/` inside it (a
checkout: ./run-tests makes it) and `../venv/` beside it (an install: /opt/callexchange/app
and /opt/callexchange/venv).
"""

import importlib.util
import os
import sys

# What the commands import from requirements-runtime.txt (the rest are dependencies).
# pyst2 by its `asterisk.config`: a bare `asterisk` could be any folder of that name (the
# checkout has one) read as a namespace package.
REQUIRED_MODULES = ("phonenumbers", "requests", "asterisk.config")
REEXEC_MARK = "CALLEXCHANGE_REEXEC"   # set before re-executing: never loop


def missing_modules(find_spec=None):
    """The required modules this Python cannot import (looked up, not imported).

    >>> missing_modules(lambda name: None if name == "requests" else object())
    ['requests']
    """
    find_spec = find_spec or _find_spec
    return [name.split(".")[0] if name != "asterisk.config" else "pyst2"
            for name in REQUIRED_MODULES if find_spec(name) is None]


def _find_spec(name):
    try:
        return importlib.util.find_spec(name)
    except ImportError:   # the parent package of a dotted name is missing
        return None


def venv_pythons(tree):
    """The Pythons of the venvs that go with the app tree `tree`, existing ones only."""
    candidates = [os.path.join(tree, ".venv", "bin", "python3"),
                  os.path.join(os.path.dirname(tree), "venv", "bin", "python3")]
    return [path for path in candidates if os.access(path, os.X_OK)]


def _same_python(path):
    # A venv's python is a symlink to the base interpreter: compare the venvs, not binaries.
    return os.path.dirname(os.path.dirname(os.path.abspath(path))) == os.path.abspath(sys.prefix)


def _shown(path):
    """`path` relative to the current directory when it is below it, else absolute."""
    relative = os.path.relpath(path)
    return os.path.abspath(path) if relative.startswith(os.pardir) else relative


def hint(missing, tree, suggestion):
    """One line: what is missing and what to run instead. `suggestion` is the command to
    offer, with {python} for the venv's Python and {tree} for the app tree."""
    what = "%s %s not installed for %s" % (", ".join(missing),
                                          "is" if len(missing) == 1 else "are", sys.executable)
    others = [path for path in venv_pythons(tree) if not _same_python(path)]
    if others:
        return "callexchange: %s; run it with the venv's Python: %s" % (
            what, suggestion.format(python=_shown(others[0]), tree=_shown(tree)))
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        return "callexchange: %s; install them into this venv: %s -m pip install -r %s" % (
            what, sys.executable, _shown(os.path.join(tree, "requirements-runtime.txt")))
    return ("callexchange: %s and there is no venv in %s; make one with ./run-tests (or: "
            "python3 -m venv .venv && .venv/bin/pip install -r requirements-runtime.txt)"
            % (what, _shown(tree)))


def reexec_with_venv(script, argv):
    """For bin/callexchange: when this Python lacks the requirements, exec `script` again
    with the venv's Python (keeping `argv`), or print the hint and exit 1."""
    missing = missing_modules()
    if not missing:
        return
    tree = os.path.dirname(os.path.dirname(os.path.realpath(script)))
    if not os.environ.get(REEXEC_MARK):
        for python in venv_pythons(tree):
            if not _same_python(python):
                os.environ[REEXEC_MARK] = "1"
                os.execv(python, [python, script] + list(argv))
    print(hint(missing, tree, "{python} %s ..." % _shown(script)), file=sys.stderr)
    sys.exit(1)


def exit_unless_runnable():
    """For `python -m callexchange`: print the hint and exit 1 when this Python lacks the
    requirements (a Python cannot be swapped under -m without guessing its path)."""
    missing = missing_modules()
    if missing:
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        tree = os.path.dirname(os.path.dirname(package))
        print(hint(missing, tree, "PYTHONPATH={tree}/lib {python} -m callexchange ..."),
              file=sys.stderr)
        sys.exit(1)
