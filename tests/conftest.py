"""Options shared by the test suite."""
from __future__ import annotations


def pytest_addoption(parser) -> None:
    parser.addoption("--rewrite", action="store_true", default=False,
                     help="data-driven scripts (tests/testdata): write the outputs produced "
                          "as the expected ones instead of comparing them")
