"""Every kernel of the 'cuda' backend compiled by real numba (typing, LLVM, NVVM) to PTX for
sm_90, in a subprocess with the simulator off, a group of kernels at a time (tests/
test_cuda_sim.py: the Elman cell's kernels and the helpers, group "elman"; tests/
test_cuda_gated_sim.py: LSTM's and GRU's, group "gated").

It needs NVVM (the CUDA toolkit, or numba-cuda's cu12/cu13 extra), not a GPU. Compiling takes a
while, so each test module starts its group as a module-scoped autouse fixture that runs
beside the simulator tests (one core each); the tests that read the report come last in their
module (``module_checks``). The report also lists the integer variables numba typed narrower
than 64 bits, device functions included: only the hardware's own thread and block indices may
be.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED_NARROW_INTEGERS = {"tid", "tx", "ty", "index"}


def start_python(code):
    """Start ``code`` in a fresh interpreter with the simulator switched off."""
    environment = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish_python(process):
    """Wait for a start_python process and parse the last line it printed (JSON)."""
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def run_python(code):
    return finish_python(start_python(code))


REPORT = """
    import json, types as pytypes
    from numba import types
    try:                                    # numba-cuda internals (0.30): may move
        import numba.cuda.compiler as compiler
        import numba.cuda.dispatcher as dispatcher
        compiler.compile_cuda, compiler._compile_pyfunc_with_fixup, dispatcher.get_current_device
    except (ImportError, AttributeError) as exc:
        print(json.dumps({"skip": f"numba-cuda's internal compile API changed: {exc}"}))
        raise SystemExit
    # device functions ask the current device for its compute capability: pretend sm_90
    dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=(9, 0))
    compiled = []                           # the typing results, to read their variables' types
    compile_cuda = compiler.compile_cuda
    compiler.compile_cuda = lambda *a, **k: compiled.append(compile_cuda(*a, **k)) or compiled[-1]
    from fastrnn.backends import cuda_kernels as K, cuda_gated_kernels as G

    def narrow_integers(cres, seen):
        # names of the integer variables narrower than 64 bits, device functions included
        names = set()
        for var, typ in cres.fndesc.typemap.items():
            if isinstance(typ, types.Integer) and typ.bitwidth < 64 and not var.startswith("$"):
                names.add(var.split(".")[-1])
            if isinstance(typ, types.Dispatcher) and id(typ) not in seen:
                seen.add(id(typ))
                for sub in typ.dispatcher.overloads.values():
                    names |= narrow_integers(sub, seen)
        return names

    def ptx_of(library):
        # NVVM's PTX, or why NVVM (the CUDA toolkit, or NVRTC that numba uses to find it) is missing
        try:
            return library.get_asm_str(cc=(9, 0)), None
        except Exception as exc:            # numba/cuda-pathfinder raise their own types
            if "not found" in str(exc).lower() or "failure finding" in str(exc).lower():
                return None, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            raise

    report, narrow, ptx_missing = {}, set(), None
    flag, count = types.boolean, types.int64
    layout = types.UniTuple(count, 5)       # a time-loop plan's layout (cuda.RecurrencePlan)
    I1, S2 = types.Array(count, 1, "C"), types.Array(count, 2, "C")
    for name, tile in (("float32", K.LARGE_TILE), ("float64", K.SMALL_TILE)):
        dt = getattr(types, name)
        C1, C2, A2 = types.Array(dt, 1, "C"), types.Array(dt, 2, "C"), types.Array(dt, 2, "A")
        A1, C3, A3 = types.Array(dt, 1, "A"), types.Array(dt, 3, "C"), types.Array(dt, 3, "A")
        kernels = {}
        if GROUP == "elman":
            kernels = {"gemm": (K.gemm_kernel(name, tile),
                                (A2, flag, A2, flag, C1, flag, A2, flag)),
                       "column sums": (K.column_sums_kernel(name), (A2, A1, A1, flag)),
                       "swap": (K.swap_first_axes, (A3, C3)),
                       "gather": (K.gather_rows, (A2, I1, C2)),
                       "scatter": (K.scatter_rows, (A2, I1, C2)),
                       "previous states": (K.previous_states, (A2, C2, S2, flag, C2)),
                       "elementwise": (K.elementwise, (C1, C1, C1, flag)),
                       "fill": (K.fill, (C1, dt))}
            loops = {"forward": (K.recurrent_kernels, 0,
                                 (C2, C1, A2, C2, S2, flag, flag, layout, flag)),
                     "backward": (K.recurrent_kernels, 1,
                                  (A2, A2, C2, C1, C2, C2, S2, flag, flag, layout, flag))}
        else:
            kernels = {"lstm cell outputs": (G.lstm_cell_outputs, (C2, C2))}
            loops = {"lstm forward": (G.lstm_kernels, 0, (C2, C2, C1, C1, C2, C2, A2, C2, C2, S2,
                                                          flag, flag, layout, flag)),
                     "lstm backward": (G.lstm_kernels, 1, (A2, C2, C2, C2, C2, C1, C1, C2, C2,
                                                           C2, C2, S2, flag, flag, layout, flag)),
                     "gru forward": (G.gru_kernels, 0, (C2, C1, C1, flag, C2, A2, C2, S2, flag,
                                                        layout, flag)),
                     "gru backward": (G.gru_kernels, 1, (A2, A2, C2, C2, C2, C1, C2, C2, S2,
                                                         flag, layout, flag))}
        for what, (factory, which, signature) in loops.items():
            for grid_wide in (False, True):
                kernels[f"{what} {grid_wide}"] = (factory(name, grid_wide)[which], signature)
        for what, (kernel, signature) in kernels.items():
            library, _ = compiler._compile_pyfunc_with_fixup(
                kernel.py_func, signature, device=False, cc=(9, 0), abi="numba")
            narrow |= narrow_integers(compiled[-1], set())
            ptx, ptx_missing = ptx_of(library)
            report[f"{name} {what}"] = {
                "cooperative": library.use_cooperative,
                "ptx": None if ptx is None else {"sm_90": ".target sm_90" in ptx,
                                                 "f64": ".f64" in ptx,
                                                 "grid sync": "cudaCGSynchronize" in ptx}}
    report["narrow integers"], report["ptx missing"] = sorted(narrow), ptx_missing
    print(json.dumps(report))
"""


def module_checks(group, expected):
    """What a test module adopts to check kernel group ``group`` (``expected`` kernels per
    dtype), to be assigned to these names in it:

        (sm90_compile, sm90_report, test_every_kernel_types_and_lowers_for_sm90,
         test_every_kernel_compiles_to_ptx_for_sm90, test_kernel_index_arithmetic_is_64_bit)

    The compile starts with the module's first test (an autouse fixture) and its report is
    read by the three tests, which come last in the module."""

    @pytest.fixture(scope="module", autouse=True, name="sm90_compile")
    def compile_group():
        process = start_python(f"GROUP = {group!r}\n" + textwrap.dedent(REPORT))
        yield process
        if process.poll() is None:          # its tests were deselected
            process.kill()
            process.communicate()

    @pytest.fixture(scope="module", name="sm90_report")
    def report_of(sm90_compile):
        return finish_python(sm90_compile)

    def test_every_kernel_types_and_lowers_for_sm90(sm90_report):
        """Numba launches a kernel cooperatively when it contains a grid sync: the time-loop
        kernels built with grid_wide=True (their names end in 'True'), and no other."""
        for (dtype, kernel), result in kernel_reports(sm90_report, expected).items():
            assert result["cooperative"] == kernel.endswith("True"), kernel

    def test_every_kernel_compiles_to_ptx_for_sm90(sm90_report):
        kernels = kernel_reports(sm90_report, expected)
        if sm90_report["ptx missing"]:
            pytest.skip(f"no NVVM here ({sm90_report['ptx missing']}): install the CUDA "
                        "toolkit's NVVM and NVRTC (pip: nvidia-cuda-nvrtc) to compile PTX "
                        "without a GPU")
        for (dtype, kernel), result in kernels.items():
            assert result["ptx"]["sm_90"], kernel
            assert result["ptx"]["grid sync"] == kernel.endswith("True"), kernel
            # float32 kernels do float32 arithmetic only (no float64 from a constant's type)
            assert result["ptx"]["f64"] == (dtype == "float64"), (dtype, kernel)

    def test_kernel_index_arithmetic_is_64_bit(sm90_report):
        """Only the hardware's own thread and block indices (< 2**31) are 32-bit; every index
        computed from them meets int64 operands, so N*H past 2**31 addresses correctly."""
        kernel_reports(sm90_report, expected)
        assert set(sm90_report["narrow integers"]) <= ALLOWED_NARROW_INTEGERS

    return (compile_group, report_of, test_every_kernel_types_and_lowers_for_sm90,
            test_every_kernel_compiles_to_ptx_for_sm90, test_kernel_index_arithmetic_is_64_bit)


def kernel_reports(report, expected):
    """{(dtype, kernel): its entry}: ``expected`` kernels in both dtypes."""
    if "skip" in report:
        pytest.skip(report["skip"])
    kernels = {tuple(key.split(" ", 1)): value for key, value in report.items()
               if key.startswith("float")}
    assert len(kernels) == 2 * expected
    return kernels
