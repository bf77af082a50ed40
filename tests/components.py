"""What a test does when a real component it needs is not installed: skip with the reason, except
under CI=true, where ``make test`` installed it (scripts/system_packages.sh) and its absence is a
failure."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(why: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)
