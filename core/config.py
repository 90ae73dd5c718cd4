"""Settings from the environment (prefix CASTIEL_) and an optional .env file, validated at start."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import Invalid

DEMO_SECRET_KEY = "castiel-embedded-demo-key-not-for-production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CASTIEL_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./var")
    store: Literal["sqlite", "cosmos"] = "sqlite"
    cosmos_endpoint: str | None = None
    cosmos_key: SecretStr | None = None
    cosmos_database: str = "castiel"
    cosmos_verify_tls: bool = True
    blob: Literal["local", "azure"] = "local"
    azure_storage_connection_string: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("AZURE_STORAGE_CONNECTION_STRING", "CASTIEL_AZURE_STORAGE_CONNECTION_STRING"),
    )
    secret_key: SecretStr | None = None
    # A Key Vault reference (https://<vault>.vault.azure.net/secrets/<name>) for the Fernet key.
    fernet_key_ref: str | None = None
    admin_email: str = "admin@castiel.local"
    admin_password: SecretStr | None = None
    demo_password: SecretStr | None = None
    session_hours: float = Field(default=8.0, gt=0, le=24 * 7)
    lockout_attempts: int = Field(default=5, ge=1, le=100)
    lockout_minutes: int = Field(default=15, ge=1, le=24 * 60)
    # Single sign-on through Microsoft Entra ID (st.login); group or app-role name -> console role.
    oidc_enabled: bool = False
    oidc_role_map: dict[str, str] = Field(default_factory=dict)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    worker_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    lease_seconds: float = Field(default=60.0, gt=0, le=3600)
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    # Webhook receipt in the worker (jobs/webhooks.py): POST /webhooks/<tenant>/<connection id>; port 0 turns it off.
    webhook_port: int = Field(default=8502, ge=0, le=65535)
    webhook_bind: str = "127.0.0.1"
    # LLM / embeddings through the openai SDK (OpenAI, Azure OpenAI or any compatible base URL).
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str = "gpt-4o-mini"
    llm_azure_api_version: str | None = None
    embedder: Literal["local", "openai"] = "local"
    embedding_model: str = "text-embedding-3-small"
    # embedding requests the pipeline keeps in flight at once: lower it when the deployment's rate limit
    # answers 429s, raise it when requests wait on the network and the quota has room
    embedding_concurrency: int = Field(default=4, ge=1, le=32)
    mlflow_tracking_uri: str | None = None
    # Google Docs/Slides templates: a service account key (the JSON text) with Drive, Docs and Slides access,
    # optionally impersonating a Workspace user (domain-wide delegation).
    google_service_account_json: SecretStr | None = None
    google_impersonate: str | None = None
    # Azure ML (issue 6): with all three set, training runs as command jobs and promotions deploy blue/green.
    azureml_subscription_id: str | None = None
    azureml_resource_group: str | None = None
    azureml_workspace: str | None = None
    azureml_compute: str = "cpu-cluster"
    azureml_instance_type: str = "Standard_DS3_v2"
    # Alert notifications (issue 8): SMTP for email; CASTIEL_ALERT_CHANNELS lists fallback targets for
    # platform alerts as "email:ops@example.com slack:https://hooks.slack.com/..." (space or comma separated).
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_sender: str = "castiel-alerts@localhost"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    alert_channels: str = ""
    alert_interval_seconds: float = Field(default=60.0, ge=5, le=3600)
    # The console's public address (CASTIEL_CONSOLE_URL): links in alerts, and the OAuth consent redirect URI
    # <console_url>/integrations to register with each vendor's app (http://localhost:8501 when unset).
    console_url: str | None = None
    # Record service, page and store call telemetry into rollups (CASTIEL_TELEMETRY_ENABLED=false turns it off).
    telemetry_enabled: bool = True

    @model_validator(mode="after")
    def _check_backends(self) -> Settings:
        if self.store == "cosmos" and not (self.cosmos_endpoint and self.cosmos_key):
            raise ValueError("CASTIEL_STORE=cosmos needs CASTIEL_COSMOS_ENDPOINT and CASTIEL_COSMOS_KEY")
        if self.blob == "azure" and not self.azure_storage_connection_string:
            raise ValueError("CASTIEL_BLOB=azure needs AZURE_STORAGE_CONNECTION_STRING")
        if self.secret_key is None and not self.embedded_demo:
            raise ValueError(
                "CASTIEL_SECRET_KEY is required outside the embedded demo mode (SQLite + local blobs); "
                "set it to a long random string, e.g. `python -c 'import secrets;print(secrets.token_urlsafe(48))'`"
            )
        if self.secret_key is not None and len(self.secret_key.get_secret_value()) < 16:
            raise ValueError("CASTIEL_SECRET_KEY must be at least 16 characters")
        return self

    @property
    def embedded_demo(self) -> bool:
        return self.store == "sqlite" and self.blob == "local"

    @property
    def using_default_key(self) -> bool:
        return self.secret_key is None

    @property
    def secret(self) -> str:
        return self.secret_key.get_secret_value() if self.secret_key else DEMO_SECRET_KEY

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (cookies, Fernet), derived from the secret key."""
        return hashlib.sha256(f"{purpose}:{self.secret}".encode()).digest()

    def fernet_key(self) -> bytes:
        return base64.urlsafe_b64encode(self.derived_key("fernet"))

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "castiel.db"

    @property
    def blob_root(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"


def load_settings(**overrides: object) -> Settings:
    """Build settings; a bad value raises ``Invalid`` naming the setting and what is allowed."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            name = f"CASTIEL_{loc.upper()}" if loc else "settings"
            lines.append(f"{name}: {err['msg']}" + (f" (got {err['input']!r})" if loc and "input" in err else ""))
        raise Invalid("bad configuration:\n  " + "\n  ".join(lines)) from None
