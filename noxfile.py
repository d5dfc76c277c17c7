"""nox sessions of ctcbridge.

`nox` (the README's test command) runs the default set: the C tests, the
Python tests, and one session per framework (each in its own environment)
comparing the adapters with the framework's own CTC.  `bench` is opt-in.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["ctests", "sanitize", "tests", "torch", "jax", "tensorflow", "cross"]
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
    """Build the C engine and run its C tests (known answers, gradients, errors)."""
    build = _cmake_build(session, "ctests", "-DCMAKE_BUILD_TYPE=Release")
    session.run("ctest", "--test-dir", str(build), "--output-on-failure")


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
    session.run("ctest", "--test-dir", str(build), "--output-on-failure", env=env)
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
