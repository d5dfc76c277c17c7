"""nox sessions of ctcbridge.

`nox` (the README's test command) runs the default set: the C tests, the
Python tests, and one session per framework (each in its own environment)
comparing the adapters with the framework's own CTC.  `bench` is opt-in.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["ctests", "sanitize", "tests", "fuzz", "torch", "jax", "tensorflow",
                        "cross"]
nox.options.reuse_existing_virtualenvs = not os.environ.get("CI")
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
ROOT = Path(__file__).parent
TEST_DEPS = ["pytest>=7", "hypothesis>=6"]
# The CPU wheel of torch 2.13.0 is the one this machine's pip finds locally;
# an unpinned torch would pull a multi-GB CUDA build.
TORCH = "torch==2.13.0"


def _cmake_build(session: nox.Session, build_dir: str, *args: str) -> Path:
    """Configure and build the engine (and its C tests) with CMake from PyPI."""
    session.install("cmake>=3.15", "ninja")
    build = ROOT / "build" / build_dir
    session.run("cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja",
                "-DCTCB_BUILD_TESTS=ON", *args)
    session.run("cmake", "--build", str(build))
    return build


@nox.session(python=PYTHON)
def ctests(session: nox.Session) -> None:
    """Build the C engine and run its C tests (known answers, gradients, errors),
    then once more under Valgrind's memcheck (no leak, no invalid access)."""
    import shutil

    build = _cmake_build(session, "ctests", "-DCMAKE_BUILD_TYPE=Release")
    session.run("ctest", "--test-dir", str(build), "--output-on-failure")
    if shutil.which("valgrind") is None:
        session.error("valgrind is required for the memcheck run (Debian package valgrind)")
    session.run("valgrind", "--leak-check=full", "--errors-for-leak-kinds=all",
                "--error-exitcode=3", str(build / "test_engine"), external=True)


@nox.session(python=PYTHON)
def sanitize(session: nox.Session) -> None:
    """The engine built with AddressSanitizer + UndefinedBehaviorSanitizer: the C tests,
    then the Python test suite running on that build (sanitizer runtimes preloaded)."""
    build = _cmake_build(session, "sanitize", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                         "-DCTCB_SANITIZE=ON")
    env = {
        # leaks of the (uninstrumented) Python interpreter are not ours; the OOM
        # test asks for an impossible allocation on purpose
        "ASAN_OPTIONS": "detect_leaks=0:allocator_may_return_null=1:abort_on_error=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    }
    # the C tests own every allocation: LeakSanitizer on for them
    session.run("ctest", "--test-dir", str(build), "--output-on-failure",
                env={**env, "ASAN_OPTIONS": "detect_leaks=1:allocator_may_return_null=1"})
    runtimes = [
        session.run("gcc", f"-print-file-name={lib}", external=True, silent=True).strip()
        for lib in ("libasan.so", "libubsan.so")
    ]
    session.install(".", *TEST_DEPS)
    env.update(LD_PRELOAD=" ".join(runtimes),
               CTCBRIDGE_LIBRARY=str(build / "libctcbridge_engine.so"))
    session.run("pytest", "tests", "--ignore=tests/frameworks", "-p", "no:cacheprovider",
                *session.posargs, env=env)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Install the package and run the Python tests (engine vs reference, errors, threads)."""
    session.install(".", *TEST_DEPS)
    session.run("pytest", "tests", "--ignore=tests/frameworks", *session.posargs)


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """atheris on the canonical API for a bounded time (60 s; `-- SECONDS` to change),
    starting from the corpus in fuzz/corpus (a temporary copy is grown)."""
    import shutil
    import tempfile

    seconds = session.posargs[0] if session.posargs else "60"
    session.install(".", "atheris")
    corpus = Path(tempfile.mkdtemp(prefix="ctcbridge-fuzz-")) / "corpus"
    shutil.copytree(ROOT / "fuzz" / "corpus", corpus)
    session.run("python", str(ROOT / "fuzz" / "fuzz_canonical.py"), f"-max_total_time={seconds}",
                "-rss_limit_mb=4096", f"-artifact_prefix={corpus.parent}/", str(corpus))
    session.log(f"corpus grew from {len(list((ROOT / 'fuzz' / 'corpus').iterdir()))} to "
                f"{len(list(corpus.iterdir()))} inputs (copy them to fuzz/corpus to keep them)")


@nox.session(python=PYTHON)
def torch(session: nox.Session) -> None:
    """ctcbridge.torch against torch's own CTC (torch 2.13.0 CPU): values, gradients, compile."""
    session.install(".", TORCH, *TEST_DEPS)
    session.run("pytest", "tests/frameworks/test_torch.py", *session.posargs)


@nox.session(python=PYTHON)
def jax(session: nox.Session) -> None:
    """ctcbridge.optax against optax.ctc_loss, with and without JAX_ENABLE_X64."""
    session.install(".", "jax", "optax", *TEST_DEPS)
    session.run("pytest", "tests/frameworks/test_optax.py", *session.posargs)
    session.run("pytest", "tests/frameworks/test_optax.py", *session.posargs,
                env={"JAX_ENABLE_X64": "1"})


@nox.session(python=PYTHON)
def tensorflow(session: nox.Session) -> None:
    """ctcbridge.tensorflow and ctcbridge.keras against tf.nn.ctc_loss, tf.compat.v1 and Keras."""
    session.install(".", "tensorflow-cpu", *TEST_DEPS)
    session.run("pytest", "tests/frameworks/test_tensorflow.py", *session.posargs)


@nox.session(python=PYTHON)
def cross(session: nox.Session) -> None:
    """Every signature on torch, jax and tensorflow arrays gives the numpy results."""
    session.install(".", TORCH, "tensorflow-cpu", "jax", "optax", *TEST_DEPS)
    session.run("pytest", "tests/frameworks/test_cross.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Benchmark loss + gradient against torch and optax; writes docs/benchmarks.md."""
    session.install(".", TORCH, "jax", "optax", "tensorflow-cpu", "matplotlib")
    session.run("python", "benchmarks/bench.py", *session.posargs)
