"""Data preparation: raw SIGIR 2022 bundle files -> RecBole atomic files."""

from recbole_bundlellm.data.download import download
from recbole_bundlellm.data.prepare import default_raw_root, prepare, prepare_domain
from recbole_bundlellm.data.raw import DOMAINS, DataError

__all__ = ["DOMAINS", "DataError", "default_raw_root", "download", "prepare", "prepare_domain"]
