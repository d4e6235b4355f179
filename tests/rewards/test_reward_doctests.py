"""The `Example:` sections of the `rewards` docstrings run as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "rewards.config",
    "rewards.contract",
    "rewards.functions",
    "rewards.wrappers",
    "rewards.vector",
    "rewards.testing",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if name != "rewards.contract":
        assert result.attempted > 0
