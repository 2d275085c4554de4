"""The command line as a user meets it: ``python -m fastrnn`` / ``fastrnn``, info, --version,
help, errors and a closed pipe. Each case runs the command in a fresh interpreter."""
import os
import shutil
import subprocess
import sys

import fastrnn

# The CUDA simulator that tests/conftest.py turns on is no GPU: commands run without it.
ENV = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
QUICK_BENCH = ["bench", "--shapes", "tiny", "--repeats", "1", "--min-sample", "0.001",
               "--no-progress", "--engines", "fastrnn"]
AS_SCRIPT = ("import sys; sys.argv[0] = 'fastrnn'; from fastrnn.__main__ import main; "
             "sys.exit(main())")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fastrnn", *args], capture_output=True,
                          text=True, timeout=300, env=ENV)


def run_script(*args):
    """The ``fastrnn`` console script when it is installed next to this Python, else the
    function it calls (``fastrnn.__main__:main``) under the script's name."""
    script = shutil.which("fastrnn", path=os.path.dirname(sys.executable))
    command = [script] if script else [sys.executable, "-c", AS_SCRIPT]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=120,
                          env=ENV)


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


def test_version_from_the_module_and_from_the_script():
    for result in (run_cli("--version"), run_script("--version")):
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"fastrnn {fastrnn.__version__}\n"


def test_bare_call_prints_help_and_succeeds():
    result = run_cli()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m fastrnn ")
    for command in ("info", "bench", "--version"):
        assert command in result.stdout
    assert result.stderr == ""


def test_script_help_names_the_script():
    result = run_script("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: fastrnn ")


def test_bench_help_is_complete():
    result = run_cli("bench", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("usage: python -m fastrnn bench ")
    for option in ("--shapes", "--shape", "--engines", "--sections", "--threads", "--repeats",
                   "--clock", "--min-sample", "--settle", "--format", "--output", "--json",
                   "--plot", "--no-progress"):
        assert option in text
    words = " ".join(text.split())
    assert "The limit, exactly:" in words and "one NumPy matmul over a [T, B, H] stack" in words
    assert "taskset -c 0 python -m fastrnn bench" in text
    for engine in ("fastrnn", "fastrnn.step", "fastrnn.torch", "torch", "onnxruntime", "jax"):
        assert f"\n  {engine} " in text
    assert text.rstrip().endswith("--plot deepbench.png")      # the epilog's last example


def test_unknown_command_is_one_line_and_exit_2():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("python -m fastrnn: error: argument COMMAND: invalid choice")
    assert "(see python -m fastrnn --help)" in result.stderr


def test_unknown_option_is_one_line_and_exit_2():
    result = run_cli("--frobnicate")
    assert result.returncode == 2
    assert result.stderr == ("python -m fastrnn: error: unrecognized arguments: --frobnicate "
                             "(see python -m fastrnn --help)\n")


def test_a_reader_that_closes_the_pipe_ends_the_bench_quietly():
    process = subprocess.Popen([sys.executable, "-m", "fastrnn", *QUICK_BENCH],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    process.stdout.close()                       # nobody will read the report
    stderr = process.stderr.read().decode()
    process.wait(timeout=300)
    assert process.returncode == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


def test_bench_piped_into_head():
    command = f"{sys.executable} -m fastrnn {' '.join(QUICK_BENCH)} | head -1"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                            timeout=300, env=ENV)
    assert result.returncode == 0
    assert result.stdout.startswith(f"fastrnn {fastrnn.__version__} bench:")
    assert result.stdout.count("\n") == 1
    assert "Traceback" not in result.stderr
