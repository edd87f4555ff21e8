"""The package's import structure: no cycles, the library never imports the CLI, no private
names taken from another module. Reads the code with ast; imports nothing of it."""

import ast
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "vaefilter"
PACKAGE = PACKAGE_DIR.name
# modules that may import the CLI: the CLI itself and the ``python -m`` entry
CLI_USERS = {f"{PACKAGE}.cli", f"{PACKAGE}.__main__"}


def _modules():
    """{dotted module name: path} of every module of the package."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def _imports(module, path, modules):
    """(line, imported module, name or None, local name of a module or None) per package import.

    ``from .a import b as c`` yields (line, 'pkg.a.b', None, 'c') when b is a module and
    (line, 'pkg.a', 'b', None) when it is a name; ``import pkg.a as c`` yields
    (line, 'pkg.a', None, 'c'), ``import pkg.a`` (line, 'pkg.a', None, None).
    """
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield node.lineno, alias.name, None, alias.asname
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    yield node.lineno, f"{target}.{alias.name}", None, alias.asname or alias.name
                else:
                    yield node.lineno, target, alias.name, None


def _graph():
    modules = _modules()
    edges = {m: set() for m in modules}
    found = []  # (module, path, line, target, name, local)
    for module, path in modules.items():
        for line, target, name, local in _imports(module, path, modules):
            found.append((module, path, line, target, name, local))
            if target != module and target in modules:
                edges[module].add(target)
    return modules, edges, found


def _cycles(edges):
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]

    def visit(root):
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def test_the_checker_sees_the_package():
    modules, edges, found = _graph()
    assert f"{PACKAGE}.cli" in modules and f"{PACKAGE}.pipeline" in modules
    assert f"{PACKAGE}.pipeline" in edges[f"{PACKAGE}.cli"]  # relative imports are resolved
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    _, edges, _ = _graph()
    assert _cycles(edges) == []


def test_the_library_never_imports_the_cli():
    _, _, found = _graph()
    offenders = [f"{path.name}:{line}: imports {target}" for module, path, line, target, _, _ in found
                 if target in CLI_USERS - {f"{PACKAGE}.__main__"} and module not in CLI_USERS]
    assert offenders == []


def test_no_private_names_from_other_modules():
    modules, _, found = _graph()
    offenders = [f"{path.name}:{line}: from {target} import {name}" for module, path, line, target, name, _ in found
                 if name is not None and _is_private(name) and target != module and target in modules]
    # through an imported module: ``from . import plotting`` then ``plotting._helper``
    for module, path in modules.items():
        bound = {local: target for m, _, _, target, _, local in found if m == module and local and target != module}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and _is_private(node.attr)):
                offenders.append(f"{path.name}:{node.lineno}: {bound[node.value.id]}.{node.attr}")
    assert offenders == []


def test_the_checks_catch_what_they_forbid(tmp_path, monkeypatch):
    """A made-up package with each fault: the checks above would fail on it."""
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("from . import pipeline\n")
    (package / "pipeline.py").write_text("from .helpers import _hidden\nfrom . import cli\n")
    (package / "helpers.py").write_text("from . import pipeline as p\n_hidden = p._other\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_DIR", package)
    modules, edges, found = _graph()
    assert _cycles(edges) == [[f"{PACKAGE}.cli", f"{PACKAGE}.helpers", f"{PACKAGE}.pipeline"]]
    for check in (test_the_library_never_imports_the_cli, test_no_private_names_from_other_modules):
        try:
            check()
        except AssertionError as exc:
            assert "pipeline.py" in str(exc) or "helpers.py" in str(exc)
        else:
            raise AssertionError(f"{check.__name__} passed on a faulty package")
