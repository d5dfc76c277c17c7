"""The pytest plugin of ctcbridge.testing (entry point ``pytest11``: ``ctcbridge``).

It adds the options ``--ctc-impl MODULE:FUNCTION`` (or ``path/to/file.py:function``),
``--ctc-convention NAME``, ``--ctc-framework FW`` and ``--ctc-device DEV``, and
parametrizes the tests shipped in ``ctcbridge/testing/test_conformance.py`` with
one test per corpus case, so that ``-k``, ``-x`` and ``--junitxml`` work as usual::

    pytest --pyargs ctcbridge.testing --ctc-impl my_ctc:ctc_loss --ctc-convention torch.ctc_loss

Loaded in every pytest run where ctcbridge is installed, it only adds the options
and imports nothing else until its own tests are collected.
"""

from __future__ import annotations

import pytest

_MODULE = "ctcbridge.testing.test_conformance"


def pytest_addoption(parser):
    group = parser.getgroup("ctcbridge", "CTC conformance (pytest --pyargs ctcbridge.testing)")
    group.addoption("--ctc-impl", metavar="MODULE:FUNCTION",
                    help="the CTC function to check (or path/to/file.py:function)")
    group.addoption("--ctc-convention", metavar="NAME",
                    help="the signature it is written in (ctcbridge conform --list-conventions)")
    group.addoption("--ctc-framework", metavar="FW", default=None,
                    help="the arrays it is called with (default: its native's framework)")
    group.addoption("--ctc-device", metavar="DEV", default="",
                    help="move torch or jax arrays there (e.g. cuda)")


def pytest_generate_tests(metafunc):
    if "ctc_case" in metafunc.fixturenames:
        from ctcbridge.conform.corpus import shipped_cases

        cases = shipped_cases()
        metafunc.parametrize("ctc_case", cases, ids=[c.name for c in cases])


class Conformance:
    """The implementation under test, loaded once per session from the options."""

    def __init__(self, config):
        from ctcbridge.conform.compare import find_convention, load_impl
        from ctcbridge.testing import _framework

        impl, convention = (config.getoption("--ctc-impl"), config.getoption("--ctc-convention"))
        if not (impl and convention):
            raise pytest.UsageError("ctcbridge.testing: the conformance tests need "
                                    "--ctc-impl MODULE:FUNCTION and --ctc-convention NAME")
        try:
            self.row = find_convention(convention)
            self.fn = load_impl(impl)
            self.framework = _framework(self.row, config.getoption("--ctc-framework"))
        except ValueError as exc:
            raise pytest.UsageError(f"ctcbridge.testing: {exc}") from None
        self.impl, self.device, self.cache = impl, config.getoption("--ctc-device"), {}

    def check(self, case) -> None:
        """Fail the current test with the report of `case`; skip it outside the domain."""
        __tracebackhide__ = True
        import warnings

        from ctcbridge.conform.compare import check_impl
        from ctcbridge.conform.report import ImplReport

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = check_impl(self.fn, self.row, case, self.framework, self.device,
                                self.cache)
        if result is None:
            pytest.skip(f"{case.name} is not in the domain of {self.row.name}")
        if not result.passed:
            report = ImplReport(self.impl, self.row.name, self.framework,
                                results=[(case, result)], device=self.device)
            pytest.fail(report.text(table=False), pytrace=False)


def pytest_collection_modifyitems(session, config, items):
    # the options are checked (and the implementation loaded) only when the shipped
    # conformance tests are collected: a usage error then, not one error per test
    if any(item.nodeid and getattr(item, "module", None) is not None and
           item.module.__name__ == _MODULE for item in items):
        config._ctcbridge_conformance = Conformance(config)


@pytest.fixture(scope="session")
def ctc_conformance(request):
    """The implementation named by --ctc-impl / --ctc-convention, ready to check cases."""
    found = getattr(request.config, "_ctcbridge_conformance", None)
    return found if found is not None else Conformance(request.config)
