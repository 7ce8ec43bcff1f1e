"""The package's shape: every module imports, no import loop beyond type-only ones, no private reach-ins,
no two classes of one name.

Imports under ``if TYPE_CHECKING:`` are left out of the graph (they never run); imports inside
functions are in it (they run, later). ``os._exit`` is the one private name of another module allowed.
"""
from __future__ import annotations

import ast
import collections
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / 'microagent'
ALLOWED_PRIVATE = {'os._exit'}  # the documented way to leave a forked worker without cleanup


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted(ROOT.rglob('*.py')):
        parts = list(path.relative_to(ROOT.parent).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        found['.'.join(parts)] = path
    return found


MODULES = _modules()


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == 'TYPE_CHECKING') or (
        isinstance(test, ast.Attribute) and test.attr == 'TYPE_CHECKING')


def _imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child):
            for other in child.orelse:
                found.extend(_imports(ast.Module(body=[other], type_ignores=[])))
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            found.append(child)
        found.extend(_imports(child))
    return found


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        package = module.split('.') if MODULES[module].name == '__init__.py' else module.split('.')[:-1]
        base = '.'.join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ''
    submodules = {f'{base}.{alias.name}' for alias in node.names if f'{base}.{alias.name}' in MODULES}
    # ``from . import _x`` needs only the submodule; ``from .x import Name`` needs x itself.
    return submodules if len(submodules) == len(node.names) else submodules | {base}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at run time (type-only imports left out)."""
    graph = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set().union(*(_targets(module, node) for node in _imports(tree)))
        graph[module] = {t for t in targets if t in MODULES and t != module}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for child in graph[todo.pop()] - seen:
            seen.add(child)
            todo.append(child)
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or not (each sorted)."""
    reach = {module: _reachable(graph, module) for module in graph}
    groups = {frozenset({module} | {other for other in reach[module] if module in reach[other]})
              for module in graph if module in reach[module]}
    return sorted(sorted(group) for group in groups)


@pytest.mark.parametrize('module', sorted(MODULES))
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_no_import_loop_beyond_type_only_imports() -> None:
    graph = import_graph()
    assert graph['microagent.agent'] >= {'microagent.broker', 'microagent.bus'}  # the graph is really built
    assert cycles(graph) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]


def test_no_reach_into_private_attributes_of_other_objects() -> None:
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith('_') and not node.attr.startswith('__')):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ('self', 'cls'):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == 'super':
                continue
            if ast.unparse(node) not in ALLOWED_PRIVATE:
                found.append(f'{module}:{node.lineno}: {ast.unparse(node)}')
    assert found == []


def test_class_names_are_unique() -> None:
    names = collections.defaultdict(list)
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.ClassDef):
                names[node.name].append(module)
    assert {name: where for name, where in names.items() if len(where) > 1} == {}
