"""The package's layout keeps its promises (docs/architecture.md): imports point downward
only, with no cycle, and no code is written twice.

Imports are read from the source (ast), lazy function-level ones included, so a cycle
hidden inside a function counts too.
"""
import ast
import os
import subprocess
import sys

import pytest
from paths import LIB

PACKAGE = os.path.join(LIB, "callexchange")

# Each subpackage's layer: a module imports modules of lower layers, and of its own
# subpackage; never of another subpackage of its own layer or above. Core modules
# (directly in callexchange/) are layer 0. Entry points (`__main__` modules) are above all.
LAYERS = {"core": 0, "pbx": 1, "recordings": 1, "calls": 2, "webhooks": 2, "http": 3,
          "sandbox": 4, "cli": 5}


def module_names():
    names = {}
    for folder, _dirs, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, LIB)[:-3].replace(os.sep, ".")
                names[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return names


def imports_of(path, modules):
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            candidates = [node.module] + ["%s.%s" % (node.module, a.name) for a in node.names]
        else:
            continue
        found.update(name for name in candidates if name in modules)
    return found


def graph():
    modules = module_names()
    return {name: {dep for dep in imports_of(path, modules)
                   if dep != name and not name.startswith(dep + ".")}
            for name, path in modules.items()}


def area(module):
    """'core' for callexchange.x, else the subpackage: callexchange.http.app -> 'http'."""
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in LAYERS:
        return parts[1]  # the subpackage itself (its __init__)
    return parts[1] if len(parts) > 2 else "core"


def test_there_is_no_relative_import_and_no_import_cycle():
    edges = graph()
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for dep in edges[node]:
            assert state.get(dep) != "open", "import cycle: %s" % " -> ".join(trail + [dep])
            if dep not in state:
                visit(dep, trail + [dep])
        state[node] = "done"

    for node in edges:
        if node not in state:
            visit(node, [node])
    for name, path in module_names().items():
        tree = ast.parse(open(path, encoding="utf-8").read())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level], name


def test_every_import_points_down_or_stays_in_its_own_subpackage():
    upward = []
    for module, deps in graph().items():
        if module.endswith("__main__"):
            continue  # an entry point: it imports the admin tool, nothing imports it
        for dep in deps:
            here, there = area(module), area(dep)
            if here == there:
                continue
            if LAYERS[there] >= LAYERS[here]:
                upward.append("%s -> %s" % (module, dep))
    assert upward == []


def test_only_the_entry_points_import_the_admin_tool():
    users = sorted(module for module, deps in graph().items()
                   if any(area(dep) == "cli" for dep in deps) and area(module) != "cli")
    assert users and all(module.endswith(".__main__") for module in users), users


def test_no_code_in_lib_is_written_twice():
    pytest.importorskip("pylint")
    result = subprocess.run(
        [sys.executable, "-m", "pylint", "--disable=all", "--enable=duplicate-code",
         "--min-similarity-lines=6", "--score=n", PACKAGE],
        capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout
