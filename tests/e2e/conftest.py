"""Loads every part's integration fixtures (tests/fixtures/*.py) for the e2e tests too.

Only pytest fixtures are taken from each module, so helper names (hypothesis
strategies, constants) of one part never shadow another's.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from _pytest.fixtures import FixtureFunctionDefinition

_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

for _info in sorted(pkgutil.iter_modules([str(_FIXTURES)]), key=lambda i: i.name):
    _module = importlib.import_module(f"tests.fixtures.{_info.name}")
    globals().update(
        {k: v for k, v in vars(_module).items() if isinstance(v, FixtureFunctionDefinition)}
    )
