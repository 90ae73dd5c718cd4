"""Tables with a CSV download under them."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st


def table_with_csv(
    rows: list[dict[str, Any]] | pd.DataFrame,
    key: str,
    file_name: str,
    empty: str = "Nothing here yet.",
    **dataframe_kwargs: Any,
) -> pd.DataFrame:
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    if df.empty:
        st.info(empty)
        return df
    st.dataframe(df, key=f"{key}_table", hide_index=True, width="stretch", **dataframe_kwargs)
    st.download_button(
        "Download CSV",
        df.to_csv(index=False).encode(),
        file_name=file_name,
        mime="text/csv",
        key=f"{key}_csv",
        icon=":material/download:",
    )
    return df
