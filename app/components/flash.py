"""A one-shot message a page leaves for its next run (after an action and a rerun), shown once at the top."""

from __future__ import annotations

import streamlit as st


def flash(key: str, kind: str, text: str) -> None:
    """Leave ``text`` for the next run; ``kind`` "ok" shows as success, anything else as a warning."""
    st.session_state[key] = (kind, text)


def show_flash(key: str) -> None:
    item = st.session_state.pop(key, None)
    if item:
        kind, text = item
        (st.success if kind == "ok" else st.warning)(text)
