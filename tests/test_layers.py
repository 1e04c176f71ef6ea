"""Guards the layer contract: pipelines -> assets -> tagrec_models, the layers inside the
library (no package-level import cycle), no Dagster in the library (pyproject's importlinter
section, checked by import-linter over every import, also those inside functions)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


def test_every_library_module_has_a_layer():
    """A new package or module of ``tagrec_models`` must be placed in the layer contract, or
    nothing would stop it from importing upwards."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c["layers"] for c in contracts if c.get("containers") == ["tagrec_models"])
    placed = {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}
    package = ROOT / "tagrec_models"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
    assert modules - placed == set()
