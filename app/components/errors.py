"""Turns core errors into messages on the page; unexpected errors get a reference id, never a trace."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from core.errors import CastielError, Conflict, Forbidden, Invalid, NotFound, QuotaExceeded, StoreUnavailable
from core.observability.logging import get_correlation_id

log = logging.getLogger("castiel.app")


def show_error(e: BaseException) -> None:
    if isinstance(e, Forbidden):
        st.error(f"Not authorised: {e.message}", icon=":material/block:")
    elif isinstance(e, Invalid):
        st.error(e.message, icon=":material/edit_note:")
    elif isinstance(e, NotFound):
        st.warning(e.message, icon=":material/search_off:")
    elif isinstance(e, Conflict):
        st.warning(f"{e.message}", icon=":material/sync_problem:")
    elif isinstance(e, QuotaExceeded):
        st.error(e.message, icon=":material/data_usage:")
    elif isinstance(e, StoreUnavailable):
        st.error(f"The store cannot be reached: {e.message}", icon=":material/cloud_off:")
    elif isinstance(e, CastielError):
        st.error(e.message)
    else:
        ref = get_correlation_id() or uuid.uuid4().hex[:10]
        log.error("unexpected error, reference %s", ref, exc_info=e)
        st.error(
            f"Something went wrong on our side. The details are in the server log under reference **{ref}**.",
            icon=":material/error:",
        )


@contextmanager
def handled() -> Iterator[None]:
    """``with handled(): service.call(...)`` shows any error as a message and carries on."""
    try:
        yield
    except Exception as e:  # st.stop/st.rerun are BaseExceptions and pass through
        show_error(e)
