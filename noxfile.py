"""nox sessions of ctcbridge.

`nox` (the README's test command) runs the default set: the C tests, the
Python tests, and one session per framework (each in its own environment)
comparing the adapters with the framework's own CTC.  `bench` is opt-in.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import nox

nox.options.sessions = ["ctests", "sanitize", "tests", "typecheck", "fuzz", "torch", "jax",
                        "tensorflow", "torchaudio", "cross", "mxnet", "pytensor", "theano",
                        "chainer", "migration", "docs"]
nox.options.reuse_existing_virtualenvs = not os.environ.get("CI")
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"
ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
TEST_DEPS = nox.project.dependency_groups(PYPROJECT, "test")  # pyproject's, not a copy
# The CPU wheel of torch 2.13.0 is the one this machine's pip finds locally;
# an unpinned torch would pull a multi-GB CUDA build.
TORCH = "torch==2.13.0"


def _free_gib() -> float:
    return shutil.disk_usage(ROOT).free / 2**30


# The sessions that run the documentation's code examples (tests/test_docs.py), and
# the frameworks each requires there (a missing one is an error, not a skip).  They
# are tagged `docs-examples` and `require:<framework>`, which `nox --list --json`
# shows: tests/test_docs.py reads it to check every example runs somewhere.
DOCS_EXAMPLES = {
    "mxnet": ("mxnet", "torch"),
    "pytensor": ("pytensor",),
    "migration": ("mxnet", "chainer", "theano", "torch"),
    "docs": ("torch", "tensorflow", "keras", "jax", "optax"),
}


def _session(**kwargs):
    """`nox.session(python=PYTHON, **kwargs)`, plus a private TMPDIR per session,
    deleted when it ends, and the tags of DOCS_EXAMPLES.

    Under CI the session's environment is deleted as well when it ends:
    the framework environments weigh 0.5-3 GiB each (torch, tensorflow and jax
    are installed in several), so keeping all fourteen filled the CI machine's
    disk once.  Locally they are kept, to be reused."""

    def decorate(func):
        @functools.wraps(func)
        def run(session: nox.Session) -> None:
            tmp = tempfile.mkdtemp(prefix=f"ctcbridge-{func.__name__}-")
            # pytest's tmp_path, torch.compile's cache, theano's compiledir... land here
            session.env["TMPDIR"] = tmp
            if os.environ.get("CI"):
                session.log(f"disk: {_free_gib():.1f} GiB free")
            try:
                func(session)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                if os.environ.get("CI"):
                    location = getattr(session.virtualenv, "location", None)
                    if location:
                        shutil.rmtree(location, ignore_errors=True)
                    session.log(f"disk after removing the environment: {_free_gib():.1f} GiB free")
        tags = list(kwargs.pop("tags", []))
        if func.__name__ in DOCS_EXAMPLES:
            tags += ["docs-examples"] + [f"require:{fw}" for fw in DOCS_EXAMPLES[func.__name__]]
        return nox.session(python=PYTHON, tags=tags, **kwargs)(run)

    return decorate


def _install(session: nox.Session, *packages: str) -> None:
    """This checkout's package, `packages` and the test dependency group."""
    session.install(".", *packages, *TEST_DEPS)


# A test that hangs (a deadlock among a framework's threads, say: docs/scaling.md
# tells of one in torch's DDP teardown) fails after this long, with every thread's
# stack printed, instead of holding the whole run until CI's time is up.  The
# thread method works where a signal cannot: a main thread blocked in C.  The
# slowest tests (Keras fit and torch.compile in fresh processes) take 1-3 minutes.
HANG_GUARD = ("--timeout=900", "--timeout-method=thread")


def _pytest(session: nox.Session, *args: str, env: dict | None = None) -> None:
    """pytest on `args`, then the session's own arguments (`nox -s NAME -- -k ...`)."""
    session.run("pytest", *HANG_GUARD, *args, *session.posargs, env=env)


def _docs_env(session: nox.Session) -> dict:
    """The environment of a DOCS_EXAMPLES run: the frameworks it requires."""
    return {"CTCBRIDGE_REQUIRE_FRAMEWORKS": ",".join(DOCS_EXAMPLES[session.name])}


def _cmake_build(session: nox.Session, build_dir: str, *args: str) -> Path:
    """Configure and build the engine (and its C tests) with CMake from PyPI."""
    session.install("cmake>=3.15", "ninja")
    build = ROOT / "build" / build_dir
    session.run("cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja",
                "-DCTCB_BUILD_TESTS=ON", *args)
    session.run("cmake", "--build", str(build))
    return build


@_session(tags=["quick"])
def ctests(session: nox.Session) -> None:
    """Build the C engine and run its C tests (known answers, gradients, errors),
    then once more under Valgrind's memcheck (no leak, no invalid access)."""
    build = _cmake_build(session, "ctests", "-DCMAKE_BUILD_TYPE=Release")
    session.run("ctest", "--test-dir", str(build), "--output-on-failure")
    if shutil.which("valgrind") is None:
        session.error("valgrind is required for the memcheck run (Debian package valgrind)")
    for test in ("test_engine", "test_safety", "test_decode", "test_xla_ffi"):
        session.run("valgrind", "--leak-check=full", "--errors-for-leak-kinds=all",
                    "--error-exitcode=3", str(build / test), external=True)


@_session()
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
    _install(session)
    env.update(LD_PRELOAD=" ".join(runtimes),
               CTCBRIDGE_LIBRARY=str(build / "libctcbridge_engine.so"))
    _pytest(session, "tests", "--ignore=tests/frameworks", "-p", "no:cacheprovider", env=env)


@_session(tags=["quick"])
def tests(session: nox.Session) -> None:
    """Install the package and run the Python tests (engine vs reference, errors, threads)."""
    _install(session)
    _pytest(session, "tests", "--ignore=tests/frameworks")


@_session(tags=["quick"])
def typecheck(session: nox.Session) -> None:
    """mypy on user code against the public API: tests/typing/good_user_code.py passes,
    and every line marked `# E` of tests/typing/bad_user_code.py is an error
    (reduction="avg" and the like: the API's Literal types catch them)."""
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "typecheck"))
    mypy = ("mypy", "--follow-imports=silent", "--ignore-missing-imports", "--no-incremental")
    session.run(*mypy, "tests/typing/good_user_code.py")
    out = session.run(*mypy, "tests/typing/bad_user_code.py", success_codes=[1], silent=True)
    bad = (ROOT / "tests" / "typing" / "bad_user_code.py").read_text().splitlines()
    marked = {i for i, line in enumerate(bad, 1) if line.endswith("# E")}
    flagged = {int(line.split(":")[1]) for line in out.splitlines() if ": error:" in line}
    if marked - flagged:
        session.error(f"mypy accepted lines {sorted(marked - flagged)} of bad_user_code.py")


@_session()
def fuzz(session: nox.Session) -> None:
    """atheris on the canonical API for a bounded time (60 s; `-- SECONDS` to change),
    starting from the corpus in fuzz/corpus (its copy in build/fuzz/corpus is grown)."""
    seconds = session.posargs[0] if session.posargs else "60"
    session.install(".", "atheris")
    corpus = ROOT / "build" / "fuzz" / "corpus"
    shutil.rmtree(corpus.parent, ignore_errors=True)
    shutil.copytree(ROOT / "fuzz" / "corpus", corpus)
    session.run("python", str(ROOT / "fuzz" / "fuzz_canonical.py"), f"-max_total_time={seconds}",
                "-rss_limit_mb=4096", f"-artifact_prefix={corpus.parent}/", str(corpus))
    session.log(f"corpus grew from {len(list((ROOT / 'fuzz' / 'corpus').iterdir()))} to "
                f"{len(list(corpus.iterdir()))} inputs (copy them to fuzz/corpus to keep them)")


@_session()
def torch(session: nox.Session) -> None:
    """ctcbridge.torch against torch's own CTC (torch 2.13.0 CPU): values, gradients, compile."""
    _install(session, TORCH)
    _pytest(session, "tests/frameworks/test_torch.py", "tests/frameworks/test_scale_torch.py")


@_session()
def jax(session: nox.Session) -> None:
    """ctcbridge.optax against optax.ctc_loss, with and without JAX_ENABLE_X64."""
    _install(session, "jax", "optax")
    _pytest(session, "tests/frameworks/test_optax.py", "tests/frameworks/test_jax_ffi.py")
    _pytest(session, "tests/frameworks/test_optax.py", "tests/frameworks/test_jax_ffi.py",
            env={"JAX_ENABLE_X64": "1"})
    # data parallelism over 2 host CPU devices: XLA reads the flag when jax starts
    _pytest(session, "tests/frameworks/test_scale_jax.py",
            env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})


@_session()
def tensorflow(session: nox.Session) -> None:
    """ctcbridge.tensorflow and ctcbridge.keras against tf.nn.ctc_loss, tf.compat.v1 and Keras
    (`fit` on Keras' TensorFlow, JAX and torch backends: hence jax and torch here), and the
    TF and Keras decoders against TF's (Keras's beam search on its JAX and torch backends
    too)."""
    _install(session, "tensorflow-cpu", "jax", TORCH)
    _pytest(session, "tests/frameworks/test_tensorflow.py", "tests/frameworks/test_tf_decoding.py",
            "tests/frameworks/test_keras_fit.py",
            "tests/frameworks/test_keras_decoding_backends.py",
            "tests/frameworks/test_conform_decoding.py",
            "tests/frameworks/test_explain_decoding_natives.py")
    # MirroredStrategy over 2 logical CPUs, which must be configured before TF starts
    _pytest(session, "tests/frameworks/test_scale_tensorflow.py")


# torchaudio's PyPI wheels for x86_64 are CUDA builds linked against libtorch_cuda:
# they load only beside a CUDA torch.  torchaudio 2.11 needs torch >= 2.11 (stable
# ABI); torch 2.14.1 lies on this machine's disk, its CUDA libraries come from PyPI
# (5.5 GB in the environment, about 3 minutes to install here).
TORCHAUDIO = ("torch==2.14.1", "torchaudio==2.11.1")


@_session()
def torchaudio(session: nox.Session) -> None:
    """ctcbridge.torchaudio against torchaudio.functional.forced_align and merge_tokens."""
    _install(session, *TORCHAUDIO)
    _pytest(session, "tests/frameworks/test_torchaudio.py",
            "tests/frameworks/test_conform_decoding.py",
            "tests/frameworks/test_explain_decoding_natives.py")


@_session()
def cross(session: nox.Session) -> None:
    """Every signature on torch, jax and tensorflow arrays gives the numpy results; the
    TensorFlow custom op inside tf.function gives the eager results."""
    _install(session, TORCH, "tensorflow-cpu", "jax", "optax")
    _pytest(session, "tests/frameworks/test_cross.py", "tests/frameworks/test_tf_op.py")


@_session()
def mxnet(session: nox.Session) -> None:
    """ctcbridge.mxnet and ctcbridge.gluon against mxnet 1.9.1's contrib.ctc_loss and
    gluon CTCLoss (autograd, hybridize, Symbol API); WarpCTC against the reference.
    torch beside it checks Gluon's conventions on torch tensors."""
    # mxnet 1.9.1 uses numpy aliases removed in numpy 1.24 (np.bool...)
    _install(session, "mxnet==1.9.1", "numpy<1.24", TORCH)
    _pytest(session, "tests/frameworks/test_mxnet.py")
    # the MXNet (and MXNet + torch) examples of docs/signatures/mxnet.md run here
    session.run("pytest", *HANG_GUARD, "tests/test_docs.py", "-k", "python_examples and mxnet",
                env=_docs_env(session))


@_session()
def pytensor(session: nox.Session) -> None:
    """ctcbridge.theano on PyTensor variables: the Op, pytensor.grad, compiled functions,
    and the docs' PyTensor examples."""
    _install(session, "pytensor")
    _pytest(session, "tests/frameworks/test_pytensor.py")
    # the PyTensor examples of docs/signatures/theano.md run here
    session.run("pytest", *HANG_GUARD, "tests/test_docs.py", "-k", "python_examples",
                env=_docs_env(session))


@_session()
def theano(session: nox.Session) -> None:
    """ctcbridge.theano against Theano 1.0.5's signature (its Op on Theano variables) and
    against mxnet 1.9.1's warp-ctc semantics (contrib.ctc_loss, blank_label='first')."""
    # theano 1.0.5 and mxnet 1.9.1 use numpy aliases removed in numpy 1.24
    _install(session, "theano==1.0.5", "mxnet==1.9.1", "numpy<1.24")
    # theano compiles C at run time: no BLAS to link, a fresh compile cache per run
    flags = f"blas.ldflags=,base_compiledir={session.env['TMPDIR']}/theano"
    # with a warp-ctc build (CTCBRIDGE_WARPCTC_ROOT: holds include/ctc.h and
    # build/libwarpctc.so), Theano's own Op is compared as well
    if os.environ.get("CTCBRIDGE_WARPCTC_ROOT"):
        flags += f",ctc.root={os.environ['CTCBRIDGE_WARPCTC_ROOT']}"
    _pytest(session, "tests/frameworks/test_theano.py", env={"THEANO_FLAGS": flags})


def _install_chainer(session: nox.Session, *pins: str) -> None:
    """chainer 7.8.1 is an sdist whose setup.py imports pkg_resources: build it
    without isolation, against the environment's setuptools (< 81 still has it).
    Importing chainer imports numpy.distutils, which needs the standard library's
    distutils rather than setuptools' replacement."""
    session.env["SETUPTOOLS_USE_DISTUTILS"] = "stdlib"
    session.install("setuptools>=77.0.3,<81", "wheel", *pins)
    session.install("--no-build-isolation", "chainer==7.8.1", *pins)


@_session()
def chainer(session: nox.Session) -> None:
    """ctcbridge.chainer against chainer 7.8.1's connectionist_temporal_classification:
    values, gradients, FunctionNode and Variable idioms, errors, divergences; jax beside
    it checks Chainer's conventions on jax arrays."""
    _install(session, "numpy<2", "jax")
    _install_chainer(session, "numpy<2")
    _pytest(session, "tests/frameworks/test_chainer.py")


@_session()
def migration(session: nox.Session) -> None:
    """The legacy environment (mxnet 1.9.1, chainer 7.8.1, theano 1.0.5, torch 2.13.0,
    numpy < 1.24): the Chainer and Gluon signatures on torch tensors give the losses
    and gradients of native chainer and mxnet; the documentation's examples and the
    conventions table's probes that need mxnet, chainer or theano run here."""
    session.env["SETUPTOOLS_USE_DISTUTILS"] = "stdlib"
    pins = ("numpy<1.24",)
    _install(session, *pins)
    _install_chainer(session, *pins)
    session.install("mxnet==1.9.1", "theano==1.0.5", TORCH, *pins)
    _pytest(session, "tests/frameworks/test_migration.py")
    # theano compiles C at run time: no BLAS to link, a fresh compile cache per run
    flags = f"blas.ldflags=,base_compiledir={session.env['TMPDIR']}/theano"
    # the framework-dependent parts (the `docs` session checks the rest of the pages)
    _pytest(session, "tests/test_docs.py::test_python_examples_run", "tests/test_conventions.py",
            env={**_docs_env(session), "THEANO_FLAGS": flags})


@_session()
def docs(session: nox.Session) -> None:
    """The documentation: every code example in docs/ and README.md runs (those needing
    torch, tensorflow, jax or optax here; mxnet, chainer and theano ones in `migration`),
    the conventions table is probed against every adapter and `ctcbridge explain`'s code
    against every pair, then mkdocs builds the site with --strict (warnings are errors)."""
    _install(session, TORCH, "tensorflow-cpu", "jax", "optax", "mkdocs>=1.6,<2", "matplotlib")
    _pytest(session, "tests/test_docs.py", "tests/test_conventions.py", "tests/test_explain.py",
            "tests/test_convert.py", env=_docs_env(session))
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "build" / "site"))


@_session(default=False)
def corpus(session: nox.Session) -> None:
    """Regenerate the shipped conformance corpus (ctcbridge/data/corpus-v*.npz) from the
    seeded generator and the float64 reference; bump CORPUS_VERSION when the cases change."""
    # The generator and the reference are numpy only: run them from the checkout,
    # so the file is written where it is committed.
    session.install("numpy")
    session.run("python", "-m", "ctcbridge.conform.corpus", "--write",
                env={"PYTHONPATH": str(ROOT)})


@_session(default=False)
def bench_decoding(session: nox.Session) -> None:
    """Benchmark the aligner and the decoders against torchaudio and TF (prints a table)."""
    session.install(".", *TORCHAUDIO, "tensorflow-cpu")
    session.run("python", "benchmarks/bench_decoding.py", *session.posargs)


@_session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmark loss + gradient against torch and optax; writes docs/benchmarks.md."""
    session.install(".", TORCH, "jax", "optax", "tensorflow-cpu", "matplotlib")
    session.run("python", "benchmarks/bench.py", *session.posargs)
