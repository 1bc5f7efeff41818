"""The one rule of import direction (docs/architecture.md): a module imports only from its own layer
or a lower one, never from a higher one, not even lazily inside a function, and no two modules
import each other. A plain AST walk over src/bertkit."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "bertkit"

# Lowest first. A module belongs to the first layer that names it or a package above it.
LAYERS = [
    ["files", "textfiles", "precision", "allocator", "config"],  # import nothing from bertkit but config's own
    ["padding", "tags"],
    ["model", "tokenizer", "metrics"],
    ["heads", "crf", "convert", "postprocess"],
    ["data"],
    ["tasks"],
    ["embed", "predict", "fill_mask", "generate", "retrieval", "bertscore", "perplexity", "pseudo_perplexity", "perturb",
     "explain", "explain_page", "static", "analysis", "serve"],
    ["train"],
    ["cli"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int | None:
    """The layer of a bertkit module; None for the package itself (its facade re-exports)."""
    parts = module.split(".")[1:]
    for i, names in enumerate(LAYERS):
        if parts and parts[0] in names:
            return i
    return None


def imports(path: Path, known: set[str]) -> set[str]:
    """The bertkit modules a file imports, anywhere in it (function bodies included)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("bertkit")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if not base.startswith("bertkit"):
                continue
            for alias in node.names:  # `from bertkit import precision` imports the submodule
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    return {name: imports(path, set(files)) - {name} for name, path in files.items()}


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if m != "bertkit" and layer(m) is None] == []


def test_no_module_imports_a_higher_layer():
    upward = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})" for m, targets in import_graph().items()
              for t in targets if m != "bertkit" and layer(t) is not None and layer(t) > layer(m)]
    assert upward == []


def test_no_import_cycles():
    graph, cycles = import_graph(), []

    def visit(module: str, path: list[str]) -> None:
        for target in graph.get(module, ()):
            if target in path:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in done:
                visit(target, path + [target])
        done.add(module)

    done: set[str] = set()
    for module in graph:
        visit(module, [module])
    assert cycles == []


def test_the_checker_catches_an_upward_and_a_lazy_import(tmp_path, monkeypatch):
    fake = tmp_path / "bertkit"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "tags.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "readers.py").write_text("def f():\n    from ..tasks import TASKS\n")
    (fake / "tasks.py").write_text("from .data import readers\n")
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    graph = import_graph()
    assert "bertkit.tasks" in graph["bertkit.data.readers"] and layer("bertkit.tasks") > layer("bertkit.data.readers")
