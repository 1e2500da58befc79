"""Modules depend on each other through public names only, so every arrow points one way.

A private name (``_x``) belongs to the module that defines it. This test parses every module
under src/chatpulse and fails when one imports a private name from another chatpulse module,
or reads ``something._x`` (not on ``self``/``cls``) where ``_x`` is defined in another
chatpulse module and not in its own.
"""

import ast
from pathlib import Path

import chatpulse

SRC = Path(chatpulse.__file__).parent


def _modules() -> dict[str, ast.Module]:
    modules: dict[str, ast.Module] = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.with_suffix("").relative_to(SRC.parent).parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return modules


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_definitions(tree: ast.Module) -> set[str]:
    """Private names a module defines: functions, classes, variables and attributes."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if _is_private(name)}


def private_reaches(modules: dict[str, ast.Module]) -> list[str]:
    """Every place a module uses another chatpulse module's private name."""
    defined = {name: private_definitions(tree) for name, tree in modules.items()}
    anywhere = set().union(*defined.values())
    found: list[str] = []
    for module, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("chatpulse"):
                found.extend(
                    f"{module}:{node.lineno} imports {node.module}.{alias.name}"
                    for alias in node.names
                    if _is_private(alias.name)
                )
            elif (
                isinstance(node, ast.Attribute)
                and _is_private(node.attr)
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                and node.attr not in defined[module]
                and node.attr in anywhere
            ):
                found.append(f"{module}:{node.lineno} uses {ast.unparse(node)}")
    return found


# Reaches into a library's private names that happen to share a name with one of ours: the
# module's docstring lists each such reach and why (Quix Streams' consumer and read buffer).
THIRD_PARTY_REACHES = {
    "chatpulse.processor.quix_hooks": {"app._consumer", "consumer._buffer"},
}


def _ours(found: str) -> bool:
    module, _, rest = found.partition(":")
    expression = rest.partition(" uses ")[2]
    return expression not in THIRD_PARTY_REACHES.get(module, set())


def test_no_module_reaches_into_another_through_a_private_name() -> None:
    modules = _modules()
    assert len(modules) > 50  # the whole package was read
    assert [found for found in private_reaches(modules) if _ours(found)] == []


def test_the_check_catches_both_kinds_of_reach() -> None:
    modules = {
        "chatpulse.a": ast.parse("def _helper() -> None: ...\nclass A:\n    _lock = 1\n"),
        "chatpulse.b": ast.parse(
            "from chatpulse.a import _helper\n"
            "import chatpulse.a as a\n"
            "def f(x): return a._helper, x._lock, x._mine\n"
            "class B:\n    def g(self): self._mine = 1; return self._lock\n"
        ),
    }
    assert private_reaches(modules) == [
        "chatpulse.b:1 imports chatpulse.a._helper",
        "chatpulse.b:3 uses a._helper",
        "chatpulse.b:3 uses x._lock",
    ]
