"""The settings rules as BundleConfig checks them (``properties/ranges.yaml``): this package's names
for :data:`recbole_bundlellm.rules.RANGES` and the one checker in :mod:`recbole_bundlellm.settings`."""

from __future__ import annotations

from recbole_bundlellm.rules import RANGES as NUMERIC_RANGES
from recbole_bundlellm.settings import check_row as check_numeric
from recbole_bundlellm.settings import check_rows as check_numeric_settings

__all__ = ["NUMERIC_RANGES", "check_numeric", "check_numeric_settings"]
