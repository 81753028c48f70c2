"""Stable paging of search results: a page cursor is the sort key of the last entry shown.

The next page holds the entries whose sort key comes after the cursor's, so entries added
or removed before it do not shift later pages (offsets would). The cursor is opaque to
callers (base64url JSON of the key: sort values and resource id, nothing personal beyond
what the entry itself shows the same caller).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["PageError", "decode_cursor", "encode_cursor", "page_after"]

T = TypeVar("T")


class PageError(ValueError):
    """A `_page` value that is not a cursor this server made."""


def encode_cursor(key: Sequence[Any]) -> str:
    raw = json.dumps(list(key), separators=(",", ":"), ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):
        raise PageError("_page is not a valid page cursor") from None
    if not isinstance(key, list) or not key:
        raise PageError("_page is not a valid page cursor")
    return tuple(key)


def page_after(items: Sequence[T], key: Callable[[T], tuple[Any, ...]], cursor: str | None,
               count: int) -> tuple[list[T], str | None]:
    """The `count` items after `cursor` (items sorted by `key`), and the next cursor."""
    start = 0
    if cursor is not None:
        after = decode_cursor(cursor)
        try:
            start = next((i for i, item in enumerate(items) if key(item) > after), len(items))
        except TypeError:
            raise PageError("_page does not belong to this search") from None
    chosen = list(items[start:start + count])
    more = start + count < len(items)
    return chosen, (encode_cursor(key(chosen[-1])) if more and chosen else None)
