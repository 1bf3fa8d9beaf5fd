"""Make RecBole 1.2.1 work on numpy 2, torch >= 2.6 and scipy >= 1.13.

Imported by ``recbole_bundlellm/__init__.py`` before anything from recbole. Every patch is
idempotent and adds only what a newer library removed; nothing RecBole still has is replaced.
Never import ``recbole.quick_start``: it imports ray, which cannot be imported on numpy 2.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import numpy as np

# RecBole's Config.compatibility_settings aliases these names, which numpy 2 removed.
_NUMPY_ALIASES = {"float_": np.float64, "complex_": np.complex128, "unicode_": np.str_}


def _patch_numpy() -> None:
    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def _patch_scipy() -> None:
    # scipy >= 1.13 dropped dok_matrix._update, which RecBole's graph models (LightGCN,
    # NGCF, SGL, ...) call to fill their adjacency matrices.
    from scipy.sparse import dok_matrix

    if not hasattr(dok_matrix, "_update"):

        def _update(self, data) -> None:  # type: ignore[no-untyped-def]
            for key, value in dict(data).items():
                self[key] = value

        dok_matrix._update = _update  # type: ignore[attr-defined]


@contextlib.contextmanager
def trusted_torch_load() -> Iterator[None]:
    """Let RecBole reload the checkpoint it has just written itself.

    torch >= 2.6 loads with ``weights_only=True`` by default, and RecBole pickles its Config
    into checkpoints. Only the runner's own, freshly written checkpoints are loaded inside
    this context; the setting is restored afterwards.
    """
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _silence_known_warnings() -> None:
    # RecBole 1.2.1's loader calls fillna(inplace=True) on a column (pandas 2.x warns that pandas
    # 3 will stop honouring it; pandas is pinned < 3, where it still works), and its Interaction
    # wrapping trips numpy 2's __array_wrap__ deprecation. Both are RecBole's, known, harmless.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.data\.dataset")
    warnings.filterwarnings("ignore", message=r"__array_wrap__ must accept context", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.GradScaler", category=FutureWarning)


def apply() -> None:
    """Apply every patch (idempotent)."""
    _patch_numpy()
    _patch_scipy()
    _silence_known_warnings()


apply()
