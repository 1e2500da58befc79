"""The code map in docs/architecture.md names only files and definitions that exist."""

import ast
import re
from pathlib import Path

import chatpulse

SRC = Path(chatpulse.__file__).parent
DOC = SRC.parents[1] / "docs" / "architecture.md"


def _code_map() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Code map")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _defined(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def test_every_file_the_code_map_names_exists() -> None:
    section = _code_map()
    tokens = re.findall(r"`([\w/]+(?:\.py|/))`", section)
    assert len(tokens) > 50
    missing = []
    for token in tokens:
        name = token.rstrip("/")
        if "/" in name:  # a path from src/chatpulse, src or the repository
            found = any((base / name).exists() for base in (SRC, SRC.parent, SRC.parents[1]))
        else:  # a module or package named in its package's row
            found = any(SRC.rglob(name))
        if not found:
            missing.append(token)
    assert missing == []


def test_every_definition_the_chat_line_path_names_exists() -> None:
    path_part = _code_map().split("**One chat line")[1]
    found = re.findall(r"`([\w/]+\.py)`,?\s+`([\w.]+)`", path_part)
    pairs = [(file, name) for file, name in found if not name.endswith(".py")]
    assert len(pairs) >= 10
    for file, name in pairs:
        source = SRC / file if (SRC / file).exists() else next(SRC.rglob(file))
        defined = _defined(source)
        assert all(part in defined for part in name.split(".")), (file, name)
