"""``python -m fastrnn info``: the command a user runs first when something looks wrong."""
import subprocess
import sys

import fastrnn


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fastrnn", *args], capture_output=True,
                          text=True, timeout=120)


def test_info_reports_version_backends_and_blas():
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"fastrnn {fastrnn.__version__} ")
    assert any(line.split()[:2] == ["cpu", "available"] for line in lines)
    assert any(line.split()[:2] == ["numpy", "available"] for line in lines)
    assert any(line.split()[0] == "cuda" for line in lines[1:] if line.startswith("  "))
    blas = lines[lines.index("BLAS:") + 1:]
    assert blas and any("threads" in line for line in blas)


def test_unknown_command_fails_with_usage():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
