"""Dependencies point one way: models <- data/runs/config <- training/generation <- api <- cli (docs/design.md)."""

import ast
from pathlib import Path

import vqgen

SRC = Path(vqgen.__file__).parent

# Each module's layer; a module imports only from lower layers, or from those listed beside it.
LAYERS = {
    "errors": 0, "settings": 0, "files": 0, "metrics": 0, "progress": 0, "decode": 0,
    "models": 1,
    "config": 2, "data": 2, "runs": 2, "images": 2, "plots": 2, "tracking": 2, "trainer": 2, "distributed": 2,
    "training": 3, "generate": 3,
    "api": 4, "tasks": 4,
    "demo": 5, "__init__": 5, "cli": 6, "__main__": 7,
}
SIDEWAYS = {("runs", "config"), ("tasks", "api")}   # the run format holds a config; tasks use the API's Model


def imports_of(path: Path) -> set[str]:
    """The vqgen modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vqgen"):
            parts = node.module.split(".")
            if len(parts) == 1:   # from vqgen import data, runs
                found |= {a.name for a in node.names}
            else:
                found.add(parts[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("vqgen.")}
    return found


def layer_of(path: Path) -> tuple[str, int]:
    rel = path.relative_to(SRC)
    name = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    return name, LAYERS[name]


def test_every_module_has_a_layer():
    for path in SRC.rglob("*.py"):
        layer_of(path)


def test_dependencies_point_one_way():
    wrong = []
    for path in SRC.rglob("*.py"):
        name, layer = layer_of(path)
        for dep in imports_of(path) - {name, "__version__"}:
            if dep not in LAYERS:
                continue
            if LAYERS[dep] > layer or (LAYERS[dep] == layer and (name, dep) not in SIDEWAYS and layer > 0):
                wrong.append(f"{path.relative_to(SRC)} imports {dep}")
    assert not wrong, wrong


def test_nothing_outside_models_compares_a_model_name():
    import re

    pattern = re.compile(r"""[=!]=\s*["'](vqvae|vae|prior)["']|in\s*\(\s*["'](vqvae|vae|prior)["']""")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if p.parent.name != "models"
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
