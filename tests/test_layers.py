"""Dependencies point one way: models <- data/runs/config <- training/generation <- api <- cli (docs/design.md)."""

import ast
import re
from pathlib import Path

import vqgen

SRC = Path(vqgen.__file__).parent

# Each module's layer; a module imports only from lower layers, or from those listed beside it.
LAYERS = {
    "errors": 0, "settings": 0, "files": 0, "metrics": 0, "progress": 0, "decode": 0, "threads": 0, "locks": 0,
    "memory": 0, "interrupts": 0,
    "models": 1,
    "config": 2, "data": 2, "runs": 2, "images": 2, "plots": 2, "tracking": 2, "trainer": 2, "distributed": 2,
    "choosing": 2,   # the run a command takes when given none: reads the runs' folders through runs
    "generate": 2,   # inference over tensors: models only, so no data loading and no run folders
    "score": 2,      # FID, KID and the digit reader over image tensors; batches and its cache through data
    "planning": 3, "training": 3,
    "api": 4, "scoring": 4, "commands": 4,
    "demo": 5, "__init__": 5, "cli": 6, "__main__": 7,
}
# the run format holds a config; choosing a run lists runs; commands use the API; training carries out a plan;
# score batches images and caches features through data
SIDEWAYS = {("runs", "config"), ("choosing", "runs"), ("commands", "api"), ("training", "planning"),
            ("score", "data"), ("api", "scoring")}   # Model.score hands its work to scoring, which imports no API


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
    pattern = re.compile(r"""[=!]=\s*["'](vqvae|vae|prior)["']|in\s*\(\s*["'](vqvae|vae|prior)["']""")
    hits = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py") if p.parent.name != "models"
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


# What a model offers the rest of vqgen is declared in models/base.py and models/registry.py; code outside
# models/ calls it, and never asks a model, checkpoint, spec or config whether it happens to have an
# attribute. Unwrapping DistributedDataParallel and torch.compile (trainer.unwrap) probes their wrappers.
PROBED = re.compile(r"model|checkpoint|ckpt|spec|config|cfg|\bnet\b|sampler|parent|decoder")
WRAPPERS = {"module", "_orig_mod"}


def probes(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                and len(node.args) >= 2):
            target, attr = ast.unparse(node.args[0]), node.args[1]
            name = attr.value if isinstance(attr, ast.Constant) else ast.unparse(attr)
            if PROBED.search(target) and name not in WRAPPERS:
                found.append(f"{where}:{node.lineno} {node.func.id}({target}, {name!r})")
    return found


def test_nothing_outside_models_probes_a_model_for_an_attribute():
    hits = [hit for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] != "models"
            for hit in probes(p.read_text(), str(p.relative_to(SRC)))]
    assert hits == []


def test_the_probe_check_sees_the_probes_of_0_3():
    assert probes("def f(ckpt):\n    return getattr(ckpt.model, 'conditional', False)\n", "generate.py") == \
        ["generate.py:2 getattr(ckpt.model, 'conditional')"]
    assert probes("labels = getattr(cfg.model_config, 'num_classes', None) != 0\n", "training.py") == \
        ["training.py:1 getattr(cfg.model_config, 'num_classes')"]
    assert probes("inner = getattr(model, 'module', None)\n", "trainer.py") == []   # a wrapper, unwrapped


# One path per command (docs/design.md): the commands compute through the API, and inference over tensors
# (generate) neither loads data nor searches run folders.
def test_inference_over_tensors_loads_no_data_and_finds_no_runs():
    assert imports_of(SRC / "generate.py") - {"generate"} <= {"models", "errors"}


def test_commands_compute_through_the_api_only():
    assert not imports_of(SRC / "commands.py") & {"generate", "training", "trainer", "distributed"}
    assert "commands" in imports_of(SRC / "cli.py") and "api" not in imports_of(SRC / "cli.py")
