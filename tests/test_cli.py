"""The `auralm` command table: help, unknown commands, groups, and AuralmError -> exit 2."""

from __future__ import annotations

import subprocess
import sys

from auralm.__main__ import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_group_without_subcommand_names_choices(capsys):
    assert main(["synth"]) == 2
    assert "speech" in capsys.readouterr().err


def test_every_command_has_help(capsys):
    for name in COMMANDS:
        try:
            code = main([*name.split(), "--help"])
        except SystemExit as exc:  # argparse exits 0 after printing help
            code = exc.code
        assert code == 0, name
        assert "usage" in capsys.readouterr().out.lower(), name


def test_python_dash_m_works_and_imports_no_torch():
    code = "import sys, auralm.__main__ as m; m.main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")
    res = subprocess.run([sys.executable, "-m", "auralm", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip()
