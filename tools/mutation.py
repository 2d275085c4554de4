"""Mutation testing: how many planted bugs the fast tests catch (issue 16).

    python tools/mutation.py                      # every module, then the kernel mutants
    python tools/mutation.py --module functional  # one module (repeatable)
    python tools/mutation.py --kernels            # only the hand-picked csrc/ mutants
    python tools/mutation.py --list               # the modules and kernel mutants configured
    python tools/mutation.py --module functional --survivors  # only the last run's survivors
                                                  # again (after adding tests), and every
                                                  # mutant of a function edited since
    python tools/mutation.py --module functional --rescore    # the last run's table again
                                                  # (after editing the equivalents)

Python modules: mutmut (PyPI; `pip install fastrnn[mutation]`) plants its one-token mutants
in each function of the module and runs, per mutant, the tests of the module's own fast subset
that execute that function (mutmut forks them from one warmed pytest, so a mutant costs its
tests, not a Python start). Each module runs in its own scratch directory, .mutation/<module>/,
with a generated [tool.mutmut] table: mutmut reads one config per directory, and each module
has its own test subset. Survivors are listed with their diffs in .mutation/<module>/survivors.txt.

Compiled kernels: mutmut cannot mutate C or Cython, so [tool.fastrnn.mutation.kernel] lists
one-line mutants by hand (old text -> new text in one csrc/ file). Each is applied, the
extension rebuilt, the kernel tests run with -x, and the file restored and the clean
extension rebuilt whatever happens (Ctrl-C included).

Everything is configured in pyproject.toml, [tool.fastrnn.mutation]: the modules, their files
and test subsets, the mutants shown equivalent (with why), and the kernel mutants. The score
of a module is killed / (total - equivalent); a mutant that no test of the subset executes
counts as a survivor. One mutant at a time unless --jobs says more: the machines this runs
on are shared.
"""
import argparse
import ast
import difflib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".mutation"
SINGLE_THREADED = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
KILLED = {"killed", "timeout", "segfault"}     # a crash or a hang is a caught mutant too
MUTMUT_STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
                 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
                 -11: "segfault", -9: "segfault", None: "not run"}


def load_config():
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    return project["tool"]["fastrnn"]["mutation"], project["tool"]["pytest"]


# ---------------------------------------------------------------------------- Python modules
def mutmut_table(module, pytest_options):
    """The pyproject.toml of a module's scratch directory: mutmut's config and pytest's."""
    lines = ["[tool.mutmut]", 'source_paths = ["src"]',
             f"only_mutate = {json.dumps(module['mutate'])}",
             f"pytest_add_cli_args_test_selection = {json.dumps(module['tests'])}",
             f"pytest_add_cli_args = {json.dumps(pytest_arguments(module))}",
             f"process_isolation = {json.dumps(module.get('isolation', 'fork'))}",
             "", "[tool.pytest.ini_options]",
             f"markers = {json.dumps(pytest_options['ini_options']['markers'])}"]
    return "\n".join(lines) + "\n"


def pytest_arguments(module):
    """pytest's arguments for every run of a module's tests; ``deselect`` (a -k expression)
    leaves out tests that cannot run on mutmut's trampolines (see pyproject.toml)."""
    deselect = module.get("deselect")
    return ["-p", "no:cacheprovider"] + (["-k", deselect] if deselect else [])


def prepare_scratch(name, module, pytest_options):
    """A fresh .mutation/<name>/ that sees the tree's src/ (with its built extension) and tests/."""
    scratch = SCRATCH / name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    (scratch / "src").symlink_to(ROOT / "src")
    (scratch / "tests").symlink_to(ROOT / "tests")
    (scratch / "pyproject.toml").write_text(mutmut_table(module, pytest_options))
    return scratch


def clean_environment():
    """No PYTHONPATH: the mutated copy in mutants/src must be the fastrnn the tests import.
    One BLAS/OpenMP thread: mutmut forks each mutant's tests from one warm process, and a
    thread pool started before a fork deadlocks the child, a hang mutmut would count as a
    caught mutant."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**environment, **{name: "1" for name in SINGLE_THREADED}}


def mutated_files(scratch, module):
    """The module's files as mutmut wrote them in the scratch directory (patterns expanded)."""
    return [path for pattern in module["mutate"]
            for path in sorted((scratch / "mutants").glob(pattern))]


def statuses(scratch, module):
    """{mutant name: status} from the result files mutmut leaves beside each mutated file."""
    found = {}
    for path in mutated_files(scratch, module):
        meta = path.with_name(path.name + ".meta")
        if meta.exists():
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            found.update({k: MUTMUT_STATUS.get(v, "suspicious") for k, v in codes.items()})
    return found


def mutant_functions(mutated_file):
    """{function name: its source lines} of every function in a file mutmut wrote."""
    source = mutated_file.read_text()
    lines = source.splitlines()
    return {node.name: lines[node.lineno:node.end_lineno]
            for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and "__mutmut_" in node.name}


def write_survivors(scratch, module, survivors):
    """Each survivor's changed lines, for whoever writes the test that kills it."""
    functions = {}
    for path in mutated_files(scratch, module):
        functions.update(mutant_functions(path))
    with open(scratch / "survivors.txt", "w") as out:
        for name in survivors:
            function = name.rsplit(".", 1)[1]
            original = functions.get(function.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", [])
            changed = difflib.unified_diff(original, functions.get(function, []), lineterm="", n=0)
            out.write(f"# {name}\n" + "\n".join(list(changed)[2:]) + "\n\n")


def score_module(name, found, equivalent):
    """The module's line of the table: total, killed, equivalent, survived, score."""
    total = len(found)
    killed = sum(status in KILLED for status in found.values())
    equal = sum(mutant in equivalent for mutant in found)
    survivors = sorted(m for m, s in found.items() if s not in KILLED and m not in equivalent)
    scored = total - equal
    score = 100.0 * killed / scored if scored else 100.0
    return {"module": name, "total": total, "killed": killed, "equivalent": equal,
            "survived": len(survivors), "score": score, "survivors": survivors}


def run_mutmut(scratch, mutants=(), jobs=1):
    """mutmut over the scratch directory's module: every mutant, or only those named."""
    with open(scratch / "mutmut.log", "a") as log:
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs),
                        *mutants],
                       cwd=scratch, env=clean_environment(), stdout=log,
                       stderr=subprocess.STDOUT)


def load_results(scratch, module):
    """The module's last verdicts: results.json, written after every run (mutmut's own files
    are reset when the test subset changes), else mutmut's files."""
    saved = scratch / "results.json"
    return json.loads(saved.read_text()) if saved.exists() else statuses(scratch, module)


def function_hashes(scratch, module):
    """{qualified function name: hash of its source} as mutmut last saw the module's files."""
    hashes = {}
    for path in mutated_files(scratch, module):
        meta = path.with_name(path.name + ".meta")
        if meta.exists():
            dotted = ".".join(path.relative_to(scratch / "mutants" / "src").with_suffix("").parts)
            hashes.update({f"{dotted}.{function}": digest for function, digest in
                           json.loads(meta.read_text())["hash_by_function_name"].items()})
    return hashes


def run_survivors(scratch, module, pytest_options, survivors, found, jobs):
    """Runs the last verdicts' survivors again, and every mutant of a function edited since
    (mutmut renames and re-plants those: their old verdicts, kills included, no longer
    apply); a function that is gone takes its mutants with it. Returns the new verdicts."""
    before = function_hashes(scratch, module)
    now = statuses(scratch, module)              # an interrupted run's kills stand
    found = {mutant: now[mutant] if now.get(mutant) in KILLED else status
             for mutant, status in found.items()}
    (scratch / "pyproject.toml").write_text(mutmut_table(module, pytest_options))
    run_mutmut(scratch, survivors, jobs)         # mutmut re-plants edited files first
    after = function_hashes(scratch, module)
    edited = {function for function, digest in after.items() if before.get(function) != digest}
    function_of = lambda mutant: mutant.rsplit("__mutmut_", 1)[0]
    now = statuses(scratch, module)
    replanted = [mutant for mutant in now if function_of(mutant) in edited]
    if replanted:
        run_mutmut(scratch, replanted, jobs)
        now = statuses(scratch, module)
    return {mutant: status if function_of(mutant) in edited or found.get(mutant) not in KILLED
            else found[mutant] for mutant, status in now.items()}


def run_module(name, module, config, pytest_options, again="all", jobs=1):
    """Mutates one module and scores it. again: 'all' (a fresh run), 'survivors' (the last
    run's survivors only, against the current test subset: added tests cannot revive a killed
    mutant of unchanged code, so the killed keep their verdict) or 'none' (score again)."""
    started = time.monotonic()
    equivalent = config.get("equivalent", {})
    scratch = SCRATCH / name
    if again == "all":
        prepare_scratch(name, module, pytest_options)
        run_mutmut(scratch, jobs=jobs)
        found = statuses(scratch, module)
    else:
        found = load_results(scratch, module)
    if again == "survivors":
        found = run_survivors(scratch, module, pytest_options,
                              score_module(name, found, equivalent)["survivors"], found, jobs)
    (scratch / "results.json").write_text(json.dumps(found, indent=0, sort_keys=True))
    row = score_module(name, found, equivalent)
    row["seconds"] = time.monotonic() - started
    write_survivors(scratch, module, row["survivors"])
    return row


# ---------------------------------------------------------------------------- compiled kernels
def build_extension():
    """The in-place Cython build; True when it succeeded."""
    built = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                           cwd=ROOT, capture_output=True, text=True)
    return built.returncode == 0


def kernel_tests_fail(tests):
    """Runs the kernel tests against the tree's build; the first failing test, or None."""
    ran = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                          "-k", "not cuda", *tests], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if ran.returncode == 0:
        return None
    failed = [line for line in ran.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return failed[0] if failed else f"pytest exit code {ran.returncode}"


def run_kernel_mutant(mutant, tests):
    """Applies one mutant, rebuilds, runs the tests; the source is restored in every case."""
    path = ROOT / mutant["file"]
    original = path.read_text()
    if original.count(mutant["old"]) != 1:
        return {"name": mutant["name"], "status": "not applicable: text not found once"}
    started = time.monotonic()
    try:
        path.write_text(original.replace(mutant["old"], mutant["new"]))
        if not build_extension():
            status, caught_by = "killed", "the build (does not compile)"
        else:
            caught_by = kernel_tests_fail(tests)
            status = "survived" if caught_by is None else "killed"
    finally:
        path.write_text(original)
    return {"name": mutant["name"], "status": status, "caught_by": caught_by,
            "seconds": time.monotonic() - started}


def run_kernels(config):
    kernel = config["kernel"]
    rows = []
    try:
        for mutant in kernel["mutants"]:
            rows.append(run_kernel_mutant(mutant, kernel["tests"]))
            print_kernel_row(rows[-1])
    finally:
        if not build_extension():
            sys.exit("the clean kernels did not rebuild: run `python setup.py build_ext --inplace`")
    return rows


# ---------------------------------------------------------------------------- report
def print_module_row(row):
    print(f"{row['module']:<16} {row['total']:>6} {row['killed']:>6} {row['equivalent']:>6} "
          f"{row['survived']:>6} {row['score']:>6.1f}% {row['seconds']:>7.0f}s", flush=True)


def print_kernel_row(row):
    print(f"  {row['name']:<40} {row['status']:<9} {row.get('caught_by') or ''}", flush=True)


def main(argv=None):
    config, pytest_options = load_config()
    modules = config["modules"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", choices=sorted(modules),
                        help="mutate this module only (repeatable)")
    parser.add_argument("--kernels", action="store_true", help="only the csrc/ mutants")
    parser.add_argument("--list", action="store_true", help="show what is configured")
    parser.add_argument("--jobs", type=int, default=1,
                        help="mutants run at once (default 1: the machines are shared)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--survivors", action="store_const", dest="again", const="survivors",
                       default="all", help="run only the last run's survivors again")
    again.add_argument("--rescore", action="store_const", dest="again", const="none",
                       help="score the modules' last runs again without mutating")
    args = parser.parse_args(argv)
    if args.list:
        for name, module in modules.items():
            print(f"{name}: {' '.join(module['mutate'])}\n    tests: {' '.join(module['tests'])}")
        for mutant in config["kernel"]["mutants"]:
            print(f"kernel: {mutant['name']} ({mutant['file']})")
        return 0
    chosen = args.module or ([] if args.kernels else list(modules))
    rows = []
    if chosen:
        print(f"{'module':<16} {'total':>6} {'killed':>6} {'equiv':>6} {'surv':>6} "
              f"{'score':>7} {'time':>8}")
    for name in chosen:
        rows.append(run_module(name, modules[name], config, pytest_options, args.again,
                               args.jobs))
        print_module_row(rows[-1])
    kernel_rows = []
    if args.kernels or not (args.module or args.again != "all"):
        print("kernel mutants:")
        kernel_rows = run_kernels(config)
    target = config.get("target_percent", 90)
    failed = ([r["module"] for r in rows if r["score"] < target]
              + [r["name"] for r in kernel_rows if r["status"] != "killed"])
    if failed:
        print(f"below target ({target}% of each module, every kernel mutant): {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
