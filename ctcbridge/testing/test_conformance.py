"""The conformance tests the pytest plugin runs: one per corpus case.

    pytest --pyargs ctcbridge.testing --ctc-impl MODULE:FUNCTION --ctc-convention NAME
"""


def test_case(ctc_case, ctc_conformance):
    """The implementation agrees with the float64 reference on this corpus case."""
    ctc_conformance.check(ctc_case)
