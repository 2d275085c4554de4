"""What a user gets: the installed package, and the sdist and wheel it comes from.

Always: the package under test has its compiled kernels and its py.typed marker, and imports
from a directory that is not the source tree without importing torch.

With FASTRNN_DIST_DIR (a folder holding `python -m build`'s sdist and the auditwheel-repaired
wheel), as .ci/run sets it after installing that wheel in a fresh venv: the package under test
IS the installed wheel (not src/), the wheel is manylinux-tagged, carries py.typed and a
stripped kernel module (no debug sections, no symbol table) and no sources, and the sdist
carries everything a build and this test suite need. Locally:

    python -m build --outdir dist && auditwheel repair -w dist dist/*-linux_*.whl
    pip install dist/*manylinux*.whl && FASTRNN_DIST_DIR=dist python -m pytest tests/test_packaging.py
"""
import importlib.metadata
import importlib.resources
import importlib.util
import os
import re
import struct
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import fastrnn

REPO = Path(__file__).resolve().parent.parent
DIST = os.environ.get("FASTRNN_DIST_DIR")
KERNEL_MODULES = ["fastrnn._rnn_cpu"]

if DIST is None and os.environ.get("CI") == "true":
    raise RuntimeError("CI runs tests/test_packaging.py against built artefacts: set "
                       "FASTRNN_DIST_DIR (see .ci/run)")
needs_dist = pytest.mark.skipif(DIST is None, reason="FASTRNN_DIST_DIR not set (.ci/run sets it)")


def one_file(pattern):
    found = sorted(Path(DIST).glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {DIST}, found {[p.name for p in found]}"
    return found[0]


def elf_section_names(data):
    """Section names of a 64-bit little-endian ELF shared object (what `readelf -S` lists)."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit LE ELF file"
    section_table, = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)

    def section(index):        # (name offset, file offset) of one section header
        name, _, _, _, offset = struct.unpack_from("<IIQQQ", data, section_table + index * entry_size)
        return name, offset

    names_offset = section(names_index)[1]
    names = []
    for index in range(count):
        start = names_offset + section(index)[0]
        names.append(data[start:data.index(b"\0", start)].decode())
    return names


def test_package_has_its_kernels_and_type_marker():
    package = importlib.resources.files("fastrnn")
    assert package.joinpath("py.typed").is_file()
    for name in KERNEL_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin.endswith(".so"), name


def test_imports_from_elsewhere_without_torch(tmp_path):
    script = textwrap.dedent("""
        import sys
        import fastrnn, fastrnn.keras
        print(fastrnn.__version__, "torch" in sys.modules, fastrnn.backend_status()["cpu"])
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [fastrnn.__version__, "False", "None"]


@needs_dist
def test_package_under_test_is_the_installed_wheel():
    location = Path(fastrnn.__file__).resolve()
    assert REPO / "src" not in location.parents, f"fastrnn imported from src/: {location}"
    assert location.parent.parent.name == "site-packages", location
    assert Path(sys.prefix).resolve() in location.parents, location
    assert importlib.metadata.version("fastrnn") == fastrnn.__version__
    installed = {str(path) for path in importlib.metadata.files("fastrnn")}
    assert "fastrnn/py.typed" in installed
    assert any(re.fullmatch(r"fastrnn/_rnn_cpu\..*\.so", path) for path in installed)


@needs_dist
def test_wheel_is_manylinux_typed_and_stripped():
    wheel = one_file("*.whl")
    assert re.search(r"-cp3\d+-cp3\d+-manylinux_\d+_\d+_x86_64\.whl$", wheel.name), wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "fastrnn/py.typed" in names and "fastrnn/keras.py" in names
        assert not [n for n in names if n.endswith((".pyx", ".pxd", ".c", ".h"))]
        kernels = [n for n in names if n.endswith(".so")]
        assert len(kernels) == len(KERNEL_MODULES), kernels
        for name in kernels:
            sections = elf_section_names(archive.read(name))
            assert ".text" in sections and ".dynsym" in sections
            assert not [s for s in sections if s.startswith(".debug")], (name, sections)
            assert ".symtab" not in sections, name


@needs_dist
def test_sdist_holds_what_a_build_and_the_tests_need():
    sdist = one_file("*.tar.gz")
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        names = {name[len(top) + 1:] for name in archive.getnames()}
    needed = {"pyproject.toml", "setup.py", "README.md", "LICENSE", "MANIFEST.in",
              "src/fastrnn/py.typed", "src/fastrnn/__init__.py"}
    needed |= {f"csrc/{p.name}" for p in (REPO / "csrc").iterdir()
               if p.suffix in {".pyx", ".pxd", ".h"}}
    needed |= {f"tests/{p.name}" for p in (REPO / "tests").glob("*.py")}
    needed |= {f"examples/{p.name}" for p in (REPO / "examples").glob("*.py")}
    assert not needed - names, sorted(needed - names)
    assert not [n for n in names if n.endswith((".so", ".pyc")) or n.startswith("csrc/") and
                n.endswith(".c")]
