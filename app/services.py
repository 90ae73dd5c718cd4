"""The app's handle on core: services built once per data dir (``st.cache_resource``)."""

from __future__ import annotations

import os

import streamlit as st

from core.bootstrap import Services, build
from core.config import load_settings


@st.cache_resource(show_spinner=False)
def _services_for(cache_key: str) -> Services:
    return build(load_settings())


def get_services() -> Services:
    # Keyed by the environment that shapes the build, so tests with their own data dir get their own.
    key = "|".join(os.environ.get(k, "") for k in ("CASTIEL_DATA_DIR", "CASTIEL_STORE", "CASTIEL_BLOB"))
    return _services_for(key)
