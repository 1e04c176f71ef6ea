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
