"""Fixtures for the model integration tests (defined in ``ml_env``, shared with the Models AppTest)."""

from __future__ import annotations

from tests.integration.ml.ml_env import mlflow_template, models_env, people, seeded_models  # noqa: F401
