"""Progress bars for long work (tqdm on stderr), silent when not a terminal unless asked."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, **kwargs: Any) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr. ``AURALM_PROGRESS=0`` turns bars off, ``=1`` forces them."""
    flag = os.environ.get("AURALM_PROGRESS")
    disable = flag == "0" or (flag != "1" and not sys.stderr.isatty() and "PYTEST_CURRENT_TEST" in os.environ)
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=disable, file=sys.stderr, dynamic_ncols=True, **kwargs)
