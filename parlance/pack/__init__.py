"""Assistant packs: an assistant as a directory of data files (docs/assistant-packs.md)."""

from parlance.pack.loader import (
    DEFAULT_PACK,
    Pack,
    PackError,
    Problem,
    bundled_packs,
    check_pack,
    load_pack,
    resolve,
)

__all__ = [
    "DEFAULT_PACK",
    "Pack",
    "PackError",
    "Problem",
    "bundled_packs",
    "check_pack",
    "load_pack",
    "resolve",
]
