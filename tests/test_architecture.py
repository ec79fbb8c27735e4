"""The import contract (pyproject.toml, [tool.importlinter]): imports go only downward
(core < hub, training < components < data < metrics < recipes < serve) and no recipe imports another.
`lint-imports` checks it here, so `make test` fails on an upward import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(src: Path, config: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(LINT), str(config), "--no-cache"], cwd=src.parent, env=env,
                          capture_output=True, text=True, timeout=300)


def test_imports_go_only_downward():
    res = _lint(ROOT / "src", ROOT / "pyproject.toml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "BROKEN" not in res.stdout and res.stdout.count("KEPT") >= 2


def test_the_contract_catches_an_upward_import_and_a_recipe_importing_another(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "auralm", src / "auralm", ignore=shutil.ignore_patterns("__pycache__"))
    config = tmp_path / "pyproject.toml"
    shutil.copy(ROOT / "pyproject.toml", config)
    errors = src / "auralm" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef _upward():\n    from auralm.recipes.hear import model  # noqa\n")
    sound = src / "auralm" / "recipes" / "sound" / "data.py"
    sound.write_text(sound.read_text() + "\n\ndef _sideways():\n    from auralm.recipes.hear import demo  # noqa\n")
    res = _lint(src, config)
    assert res.returncode != 0
    assert "auralm.core.errors -> auralm.recipes.hear.model" in res.stdout
    assert "auralm.recipes.sound.data -> auralm.recipes.hear.demo" in res.stdout
