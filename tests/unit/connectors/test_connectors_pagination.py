"""Reusable paginators: each reads its vendor's next-page token and stops at the end."""

from __future__ import annotations

import pytest

from connectors.pagination import (
    CursorPaginator,
    NextLinkPaginator,
    OffsetPaginator,
    PageTokenPaginator,
    dig,
    paginate,
)
from core.errors import TransientError


def scripted(pages: dict):
    seen = []

    def fetch(token):
        seen.append(token)
        return pages[token]

    return fetch, seen


def test_cursor_paginator_follows_nested_cursor_until_absent():
    fetch, seen = scripted(
        {
            None: {"results": [1, 2], "paging": {"next": {"after": "2"}}},
            "2": {"results": [3, 4], "paging": {"next": {"after": "4"}}},
            "4": {"results": [5]},
        }
    )
    bodies = list(paginate(fetch, CursorPaginator("paging.next.after")))
    assert [r for b in bodies for r in b["results"]] == [1, 2, 3, 4, 5]
    assert seen == [None, "2", "4"]


def test_cursor_paginator_respects_has_more_flag():
    fetch, seen = scripted(
        {None: {"next_cursor": "a", "has_more": True}, "a": {"next_cursor": "stale", "has_more": False}}
    )
    assert len(list(paginate(fetch, CursorPaginator("next_cursor", has_more_path="has_more")))) == 2
    assert seen == [None, "a"]


def test_next_link_paginator_stops_on_done_flag_and_missing_link():
    fetch, seen = scripted(
        {
            "first": {"done": False, "nextRecordsUrl": "/q/2"},
            "/q/2": {"done": True, "nextRecordsUrl": "/q/3"},
        }
    )
    paginator = NextLinkPaginator("nextRecordsUrl", done_key="done", start_value="first")
    assert len(list(paginate(fetch, paginator))) == 2
    odata = NextLinkPaginator(start_value="u1")
    odata.advance({"@odata.nextLink": "u2"})
    assert odata.current_value == "u2" and not odata.finished
    odata.advance({"@odata.deltaLink": "d"})
    assert odata.finished


def test_offset_paginator_ends_on_short_page_or_total():
    rows = list(range(7))

    def fetch(offset):
        start = offset or 0
        return {"rows": rows[start : start + 3], "total": len(rows)}

    pages = list(paginate(fetch, OffsetPaginator(3, records=lambda b: b["rows"])))
    assert [b["rows"] for b in pages] == [[0, 1, 2], [3, 4, 5], [6]]
    exact = list(range(6))
    pages = list(
        paginate(
            lambda o: {"rows": exact[(o or 0) : (o or 0) + 3], "total": 6},
            OffsetPaginator(3, records=lambda b: b["rows"], total_path="total"),
        )
    )
    assert len(pages) == 2  # no empty third request when the total says we are done


def test_page_token_paginator_reads_google_tokens():
    fetch, seen = scripted({None: {"nextPageToken": "t1"}, "t1": {"newStartPageToken": "99"}})
    assert len(list(paginate(fetch, PageTokenPaginator()))) == 2
    assert seen == [None, "t1"]


def test_a_repeated_token_stops_instead_of_looping_forever():
    paginator = CursorPaginator("next", start_value="same")
    with pytest.raises(TransientError, match="same page token"):
        paginator.advance({"next": "same"})


def test_dig_returns_none_for_missing_steps():
    assert dig({"a": {"b": 1}}, "a.b") == 1
    assert dig({"a": 3}, "a.b") is None
