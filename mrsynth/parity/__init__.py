"""Framework-free parts of the cross-framework parity checks: tolerances, metrics, reports.

The comparisons themselves touch both frameworks and live in ``parity_tests/checks/``
(one module per kind of check).
"""
