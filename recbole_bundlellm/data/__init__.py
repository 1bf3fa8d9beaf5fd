"""Data preparation: raw SIGIR 2022 bundle files -> RecBole atomic files.

The package sits at the bottom of the import graph: it imports nothing from
``recbole_bundlellm`` beyond the version and :mod:`recbole_bundlellm.fileio`.
"""

from recbole_bundlellm.data.category_predictors import (
    CATEGORY_PREDICTORS,
    DEFAULT_CATEGORY_PREDICTOR,
    CategoryPredictor,
)
from recbole_bundlellm.data.download import download
from recbole_bundlellm.data.prepare import default_raw_root, prepare, prepare_domain
from recbole_bundlellm.data.prepared import PreparedDataMissing, check_prepared
from recbole_bundlellm.data.raw import DOMAINS, DataError

__all__ = [
    "CATEGORY_PREDICTORS",
    "DEFAULT_CATEGORY_PREDICTOR",
    "DOMAINS",
    "CategoryPredictor",
    "DataError",
    "PreparedDataMissing",
    "check_prepared",
    "default_raw_root",
    "download",
    "prepare",
    "prepare_domain",
]
