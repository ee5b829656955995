"""The one-way layering of docs/architecture.md: no module imports a module of a higher layer.

Every `import` of src/mmrobust counts, including those inside functions (lazy imports) and under
`TYPE_CHECKING`; a module in no layer fails the test, so a new module must be placed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "mmrobust"

# Lowest first. "pkg.*" is every module below pkg; other names are exact (a package's __init__).
LAYERS: list[tuple[str, list[str]]] = [
    (
        "base",
        [
            "errors", "atomic", "filelock", "registry", "version", "metrics", "runfolder", "safe_yaml", "seeds",
            "clock", "threads",
        ],
    ),
    ("data", ["data", "data.*"]),
    ("corruption", ["corruption"]),
    ("models", ["models", "models.*"]),
    ("methods", ["methods", "methods.*", "checkpoint"]),
    ("training", ["train", "train.*", "distributed", "trackers"]),
    (
        "audit",
        [
            "audit.scenarios",
            "audit.engine",
            "audit.result",
            "audit.specialists",
            "audit.compare",
            "audit.shapley",
            "audit.paired",
        ],
    ),
    ("report", ["audit", "audit.report", "audit.document", "audit.compare_report"]),  # `audit` re-exports write_report
    ("experiment", ["config", "experiment", "run", "sweep", "sweep.*"]),
    ("cli", ["cli", "__main__", "testing", ""]),  # "": the package root, which re-exports the public API
]


def layer_of(module: str) -> int:
    """The index in LAYERS of `module` (dotted, below `mmrobust`); the most specific pattern wins."""
    best: tuple[int, int] | None = None  # (specificity, layer)
    for index, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if pattern.endswith(".*"):
                prefix = pattern[:-2]
                hit = module.startswith(prefix + ".")
                specificity = len(prefix)
            else:
                hit = module == pattern
                specificity = len(pattern) + 1000  # an exact name beats any prefix
            if hit and (best is None or specificity > best[0]):
                best = (specificity, index)
    if best is None:
        raise AssertionError(f"module '{PACKAGE}.{module}' is in no layer: add it to LAYERS (and docs/architecture.md)")
    return best[1]


def modules() -> dict[str, Path]:
    """Dotted name below `mmrobust` ("" for the root) -> file."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC / PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of the package that `module` imports anywhere in its file."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = [p for p in package if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
            found |= {n.removeprefix(PACKAGE).lstrip(".") for n in names if n.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] + ([node.module] if node.module else [])
            elif node.module and node.module.split(".")[0] == PACKAGE:
                base = node.module.split(".")[1:]
            else:
                continue
            target = ".".join(base)
            for alias in node.names:  # `from . import distributed` imports a module
                sub = f"{target}.{alias.name}".lstrip(".")
                found.add(sub if sub in known else target)
    return found


def test_every_module_is_in_a_layer() -> None:
    for module in modules():
        layer_of(module)


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_module_imports_a_higher_layer(module: str) -> None:
    files = modules()
    own = layer_of(module)
    upward = sorted(
        f"{PACKAGE}.{target}".rstrip(".") + f" ({LAYERS[layer_of(target)][0]})"
        for target in imported(module, files[module], set(files))
        if layer_of(target) > own
    )
    where = f"{PACKAGE}.{module}".rstrip(".")
    assert not upward, f"{where} ({LAYERS[own][0]}) imports a higher layer: {', '.join(upward)}"


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from ..cli import main\n    import mmrobust.run\n")
    assert imported("data.m", path, {"cli", "run", "data"}) == {"cli", "run"}
