"""Reusable paginators: each reads the next-page token out of a response and says when the pages end.

Modelled on the Meltano SDK: a paginator holds ``current_value`` (what to send for the next
request), ``advance(response)`` moves it on, ``finished`` says the last page was seen, and a
repeated token stops with a TransientError instead of looping forever. ``paginate`` drives a
``fetch(token) -> response`` function with any of them.

    CursorPaginator      opaque cursor in the body (HubSpot ``paging.next.after``, Slack
                         ``response_metadata.next_cursor``, Notion ``next_cursor``)
    NextLinkPaginator    absolute URL of the next page (OData ``@odata.nextLink``, Salesforce
                         ``nextRecordsUrl``)
    OffsetPaginator      offset/limit, ends on a short page or at ``total``
    PageTokenPaginator   Google-style ``nextPageToken``
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

from core.errors import TransientError


def dig(obj: Any, path: str) -> Any:
    """``dig(body, "paging.next.after")``: None when any step is missing."""
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


class BasePaginator(ABC):
    def __init__(self, start_value: Any = None) -> None:
        self.current_value = start_value
        self.finished = False
        self.pages = 0

    @abstractmethod
    def get_next(self, response: Any) -> Any:
        """The token for the page after ``response``, or None when it was the last."""

    def advance(self, response: Any) -> None:
        self.pages += 1
        new_value = self.get_next(response)
        if new_value in (None, ""):
            self.finished = True
            return
        if new_value == self.current_value:
            raise TransientError(f"The vendor returned the same page token twice ({new_value!r}); stopping the loop")
        self.current_value = new_value


class CursorPaginator(BasePaginator):
    """Opaque cursor found at ``path`` in the body; ``has_more_path`` (if given) must be true to go on."""

    def __init__(self, path: str, has_more_path: str | None = None, start_value: Any = None) -> None:
        super().__init__(start_value)
        self.path = path
        self.has_more_path = has_more_path

    def get_next(self, response: Any) -> Any:
        if self.has_more_path is not None and not dig(response, self.has_more_path):
            return None
        return dig(response, self.path)


class NextLinkPaginator(BasePaginator):
    """Absolute (or server-relative) URL of the next page at ``key``; ``done_key`` true ends it."""

    def __init__(self, key: str = "@odata.nextLink", done_key: str | None = None, start_value: Any = None) -> None:
        super().__init__(start_value)
        self.key = key
        self.done_key = done_key

    def get_next(self, response: Any) -> Any:
        if self.done_key is not None and dig(response, self.done_key):
            return None
        return response.get(self.key) if isinstance(response, dict) else None


class OffsetPaginator(BasePaginator):
    """Offset/limit paging; a page shorter than ``page_size`` (or reaching ``total_path``) is the last."""

    def __init__(
        self,
        page_size: int,
        records: Callable[[Any], list[Any]],
        total_path: str | None = None,
        start_value: int = 0,
    ) -> None:
        super().__init__(start_value)
        self.page_size = page_size
        self.records = records
        self.total_path = total_path

    def get_next(self, response: Any) -> Any:
        count = len(self.records(response))
        nxt = int(self.current_value or 0) + count
        if count < self.page_size:
            return None
        if self.total_path is not None:
            total = dig(response, self.total_path)
            if total is not None and nxt >= int(total):
                return None
        return nxt


class PageTokenPaginator(CursorPaginator):
    """Google APIs: ``nextPageToken`` in the body, sent back as ``pageToken``."""

    def __init__(self, key: str = "nextPageToken", start_value: Any = None) -> None:
        super().__init__(key, None, start_value)


def paginate(fetch: Callable[[Any], Any], paginator: BasePaginator) -> Iterator[Any]:
    """Yield each response of ``fetch(token)`` until the paginator says the pages ended."""
    while not paginator.finished:
        response = fetch(paginator.current_value)
        paginator.advance(response)
        yield response
