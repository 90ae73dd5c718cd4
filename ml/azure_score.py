"""Scoring script of the Azure ML online endpoint: raw opportunity records in, model outputs out.

Azure ML calls ``init()`` once and ``run(raw)`` per request. The features come from
``ml.features`` (the console's own builder) and the model is read with the registry's skops
allow-list, so the endpoint scores exactly as the console does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_model: Any = None
_kind: str = ""


def _model_file(root: Path) -> Path:
    found = sorted(root.rglob("model.skops"))
    if not found:
        raise FileNotFoundError(f"no model.skops under {root}")
    return found[0]


def init() -> None:
    import skops.io

    from ml.registry import TRUSTED_TYPES

    global _model, _kind
    _kind = os.environ.get("CASTIEL_MODEL_KIND", "")
    root = Path(os.environ.get("AZUREML_MODEL_DIR", "."))
    _model = skops.io.load(_model_file(root), trusted=list(TRUSTED_TYPES))


def run(raw_data: str | bytes | dict[str, Any]) -> dict[str, Any]:
    from core.errors import CastielError
    from ml.features import feature_matrix
    from ml.training import predict

    try:
        body = json.loads(raw_data) if isinstance(raw_data, str | bytes) else raw_data
        records = body.get("records") if isinstance(body, dict) else body
        if not records:
            return {"error": "send {\"records\": [...]} with at least one opportunity"}
        values = predict(_kind, _model, feature_matrix(records, as_of=body.get("as_of") if isinstance(body, dict)
                                                              else None))
        return {"predictions": [float(v) for v in values]}
    except CastielError as e:
        return {"error": e.message}
