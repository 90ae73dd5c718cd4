"""Entry point of the Azure ML command job (and of a local run): train one model and register it as challenger.

    python -m ml.train_job --tenant demo --kind risk --data opportunities.csv --trained-by me@x

Reads canonical opportunity rows (CSV or Parquet), trains with ``ml.training``, scores the
current champion on the same held-out rows for the gate, logs and registers the version in
the MLflow tracking URI from ``MLFLOW_TRACKING_URI`` (Azure ML sets it to the workspace's)
and points the ``challenger`` alias at it. Promotion stays a decision made in the console.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd


def read_rows(path: str) -> pd.DataFrame:
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def main(argv: list[str] | None = None) -> int:
    from core.errors import CastielError
    from ml.backend import gate_for, train_and_register
    from ml.registry import CHALLENGER, ModelRegistry

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tenant", required=True)
    p.add_argument("--kind", required=True, choices=("risk", "win", "forecast"))
    p.add_argument("--data", required=True)
    p.add_argument("--trained-by", default="azureml")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("CASTIEL_MLFLOW_TRACKING_URI")
    if not uri:
        print("set MLFLOW_TRACKING_URI (Azure ML jobs have it set)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="castiel-job-"))
    registry = ModelRegistry(uri, work / "artifacts", work / "cache")
    try:
        rows = read_rows(args.data)
        info = train_and_register(registry, args.tenant, args.kind, rows, trained_by=args.trained_by, seed=args.seed,
                                  source=f"job:{args.data}")
        registry.set_alias(info.name, CHALLENGER, info.version)
    except CastielError as e:
        print(f"refused: {e.message}", file=sys.stderr)
        return 1
    gate = gate_for(info)
    print(f"registered {info.name} v{info.version} as challenger; gate {'passed' if gate['passed'] else 'blocked'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
