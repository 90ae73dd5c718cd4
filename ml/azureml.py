"""Azure ML: training as a command job on a compute cluster, serving from a managed online endpoint (blue/green).

The specifications are built by the same functions in every mode: tests build and validate
them offline (the SDK's own YAML schemas, no network); with a workspace configured the
``AzureMLClient`` submits exactly those objects. The job runs ``python -m ml.train_job`` and
the endpoint runs ``ml/azure_score.py``, both on ``ml.features``, so Azure trains and serves
with the console's own feature code. When the tracking URI is the workspace's MLflow URI,
versions registered by the job are the workspace's models, referenced as
``azureml:<name>:<version>`` by deployments.

Blue/green: a promoted version deploys to the colour that is not live, at 0% traffic; then
traffic moves in steps (10%, 50%, 100%) and the old colour is kept for rollback.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from core.errors import ConfigError, Invalid
from ml.registry import registered_name
from ml.training import KINDS

DEFAULT_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
COLORS = ("blue", "green")
ROLLOUT_STEPS = (10, 50, 100)
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,30}[a-zA-Z0-9]$")
_PIP = ("scikit-learn", "skops", "numpy", "scipy", "pandas", "threadpoolctl", "imbalanced-learn", "matplotlib",
        "mlflow", "pydantic")
PACKAGE_DIRS = ("ml", "core")  # what the job and the scoring script import


@dataclass(frozen=True)
class AzureMLSettings:
    subscription_id: str | None = None
    resource_group: str | None = None
    workspace: str | None = None
    compute: str = "cpu-cluster"
    instance_type: str = "Standard_DS3_v2"
    instance_count: int = 1
    image: str = DEFAULT_IMAGE
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return bool(self.subscription_id and self.resource_group and self.workspace)


def conda_spec(extra_pip: Sequence[str] = ("azureml-mlflow",)) -> dict[str, Any]:
    """The job and deployment environment: the console's exact library versions."""
    pins = []
    for pkg in _PIP:
        try:
            pins.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pins.append(pkg)
    return {
        "name": "castiel-ml",
        "channels": ["conda-forge"],
        "dependencies": ["python=3.11", "pip", {"pip": pins + list(extra_pip)}],
    }


def stage_code(dest: Path | str, repo_root: Path | str | None = None) -> Path:
    """Copy the Python packages the job and scorer import into ``dest`` (what Azure ML uploads)."""
    root = Path(repo_root) if repo_root else Path(__file__).resolve().parents[1]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for pkg in PACKAGE_DIRS:
        src = root / pkg
        if not src.is_dir():
            raise ConfigError(f"cannot stage Azure ML code: {src} is missing")
        shutil.copytree(src, dest / pkg, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
    return dest


def endpoint_name(tenant_id: str, kind: str) -> str:
    """An online endpoint name Azure accepts (3-32 chars, letters, digits, '-') unique per tenant and kind."""
    if kind not in KINDS:
        raise Invalid(f"unknown model kind {kind!r}")
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", f"castiel-{tenant_id}-{kind}").strip("-")
    if len(base) > 32:
        digest = hashlib.sha1(base.encode()).hexdigest()[:6]
        base = f"{base[:32 - 8 - len(kind)].rstrip('-')}-{digest}-{kind}"
    return base


def _environment(cfg: AzureMLSettings, extra_pip: Sequence[str]) -> Any:
    from azure.ai.ml.entities import Environment

    return Environment(image=cfg.image, conda_file=conda_spec(extra_pip))


def training_job(cfg: AzureMLSettings, *, tenant_id: str, kind: str, data: str, code_dir: Path | str,
                 trained_by: str, seed: int = 0) -> Any:
    """The command job that trains one model on a compute cluster and logs it to the workspace's MLflow."""
    from azure.ai.ml import Input, command

    if kind not in KINDS:
        raise Invalid(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")
    if not data:
        raise Invalid("the training job needs a data location (a local file or an azureml:// URI)")
    job = command(
        code=str(code_dir),
        command=("python -m ml.train_job --tenant ${{inputs.tenant}} --kind ${{inputs.kind}} "
                 "--data ${{inputs.data}} --trained-by ${{inputs.trained_by}} --seed ${{inputs.seed}}"),
        inputs={
            "tenant": tenant_id,
            "kind": kind,
            "trained_by": trained_by,
            "seed": seed,
            "data": Input(type="uri_file", path=data),
        },
        environment=_environment(cfg, ("azureml-mlflow",)),
        environment_variables={"CASTIEL_ML_THREADS": "1"},
        compute=cfg.compute,
        experiment_name=f"castiel-{tenant_id}",
        display_name=f"train {registered_name(tenant_id, kind)}",
        tags={"castiel.tenant": tenant_id, "castiel.kind": kind, "castiel.trained_by": trained_by, **cfg.tags},
    )
    return job._to_job()  # the CommandJob the SDK submits; the builder's own dump is not a job document


def online_endpoint(cfg: AzureMLSettings, *, tenant_id: str, kind: str,
                    traffic: Mapping[str, int] | None = None) -> Any:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    name = endpoint_name(tenant_id, kind)
    return ManagedOnlineEndpoint(
        name=name, auth_mode="key", traffic=dict(check_traffic(traffic or {})),
        description=f"Castiel {kind} model of tenant {tenant_id}",
        tags={"castiel.tenant": tenant_id, "castiel.kind": kind, **cfg.tags},
    )


def online_deployment(cfg: AzureMLSettings, *, tenant_id: str, kind: str, model_version: str, color: str,
                      code_dir: Path | str) -> Any:
    """One colour of the endpoint serving one registered version with the console's scoring script."""
    from azure.ai.ml.entities import CodeConfiguration, ManagedOnlineDeployment

    if color not in COLORS:
        raise Invalid(f"deployment colour must be one of {', '.join(COLORS)}")
    if not str(model_version).isdigit():
        raise Invalid(f"model version must be a number, got {model_version!r}")
    return ManagedOnlineDeployment(
        name=color,
        endpoint_name=endpoint_name(tenant_id, kind),
        model=f"azureml:{registered_name(tenant_id, kind)}:{model_version}",
        environment=_environment(cfg, ()),
        code_configuration=CodeConfiguration(code=str(code_dir), scoring_script="ml/azure_score.py"),
        environment_variables={"CASTIEL_MODEL_KIND": kind, "CASTIEL_ML_THREADS": "1"},
        instance_type=cfg.instance_type,
        instance_count=cfg.instance_count,
        tags={"castiel.model_version": str(model_version), **cfg.tags},
    )


def check_traffic(traffic: Mapping[str, int]) -> dict[str, int]:
    unknown = [c for c in traffic if c not in COLORS]
    if unknown:
        raise Invalid(f"traffic names unknown deployment(s): {', '.join(unknown)}")
    if any(int(v) < 0 or int(v) > 100 for v in traffic.values()):
        raise Invalid("traffic shares are percentages from 0 to 100")
    total = sum(int(v) for v in traffic.values())
    if traffic and total not in (0, 100):
        raise Invalid(f"traffic shares must add up to 100 (they add up to {total})")
    return {c: int(v) for c, v in traffic.items()}


def live_color(traffic: Mapping[str, int]) -> str | None:
    """The colour carrying most traffic (None for a fresh endpoint)."""
    live = [(v, c) for c, v in traffic.items() if v > 0]
    return max(live)[1] if live else None


def next_color(traffic: Mapping[str, int]) -> str:
    live = live_color(traffic)
    return "green" if live == "blue" else "blue"


def rollout_plan(traffic: Mapping[str, int], new_color: str,
                 steps: Sequence[int] = ROLLOUT_STEPS) -> list[dict[str, int]]:
    """The traffic splits from today's to all-on ``new_color``, one step at a time."""
    check_traffic(traffic)
    if new_color not in COLORS:
        raise Invalid(f"deployment colour must be one of {', '.join(COLORS)}")
    old = live_color(traffic)
    if old is None or old == new_color:
        return [{new_color: 100}]
    if list(steps) != sorted(steps) or steps[-1] != 100:
        raise Invalid("rollout steps must rise to 100")
    return [{new_color: s, old: 100 - s} for s in steps]


def validate_spec(entity: Any, base_dir: Path | str | None = None) -> Any:
    """Round-trip a job, endpoint or deployment through the SDK's YAML schema; ``Invalid`` with its message."""
    import yaml
    from azure.ai.ml import load_job, load_online_deployment, load_online_endpoint
    from azure.ai.ml.entities import Job, OnlineDeployment, OnlineEndpoint

    if isinstance(entity, Job):
        loader: Any = load_job
        stream = io.StringIO()
        entity.dump(stream)
        text = stream.getvalue()
    elif isinstance(entity, OnlineEndpoint):
        loader = load_online_endpoint
        text = yaml.safe_dump(_plain(entity._to_dict()))
        if not _ENDPOINT_NAME.match(entity.name or ""):
            raise Invalid(f"endpoint name {entity.name!r} is not allowed by Azure (3-32 letters, digits, '-')")
        check_traffic(entity.traffic or {})
    elif isinstance(entity, OnlineDeployment):
        loader = load_online_deployment
        stream = io.StringIO()
        entity.dump(stream)
        text = stream.getvalue()
    else:
        raise Invalid(f"cannot validate a {type(entity).__name__}")
    try:
        return loader(io.StringIO(text), relative_origin=str(base_dir or Path.cwd()))
    except Exception as e:  # the SDK raises marshmallow and its own ValidationException types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Invalid(f"Azure ML rejects the {type(entity).__name__} specification: {first}") from e


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class AzureMLClient:
    """Submits the specifications above to a workspace (only constructed when one is configured)."""

    def __init__(self, cfg: AzureMLSettings, credential: Any | None = None) -> None:
        if not cfg.configured:
            raise ConfigError("Azure ML needs a subscription id, resource group and workspace name")
        from azure.ai.ml import MLClient
        from azure.identity import DefaultAzureCredential

        self.cfg = cfg
        self.ml = MLClient(credential or DefaultAzureCredential(), cfg.subscription_id, cfg.resource_group,
                           cfg.workspace)

    def tracking_uri(self) -> str:
        """The workspace's MLflow tracking URI (set it as CASTIEL_MLFLOW_TRACKING_URI)."""
        return str(self.ml.workspaces.get(self.cfg.workspace).mlflow_tracking_uri)

    def submit_training(self, job: Any) -> str:
        validate_spec(job)
        return str(self.ml.jobs.create_or_update(job).name)

    def deploy(self, *, tenant_id: str, kind: str, model_version: str, code_dir: Path | str) -> list[dict[str, int]]:
        """Deploy a version to the idle colour and give it the plan's first share of traffic.

        Returns the whole plan; later steps go through ``set_traffic`` once the new colour has
        proved itself, and the old colour stays deployed for a rollback.
        """
        from azure.core.exceptions import ResourceNotFoundError

        name = endpoint_name(tenant_id, kind)
        try:
            endpoint = self.ml.online_endpoints.get(name)
        except ResourceNotFoundError:
            endpoint = validate_spec(online_endpoint(self.cfg, tenant_id=tenant_id, kind=kind))
            endpoint = self.ml.online_endpoints.begin_create_or_update(endpoint).result()
        traffic = {c: int(v) for c, v in (endpoint.traffic or {}).items() if c in COLORS}
        color = next_color(traffic)
        deployment = online_deployment(self.cfg, tenant_id=tenant_id, kind=kind, model_version=model_version,
                                       color=color, code_dir=code_dir)
        validate_spec(deployment)
        self.ml.online_deployments.begin_create_or_update(deployment).result()
        plan = rollout_plan(traffic, color)
        self.set_traffic(tenant_id=tenant_id, kind=kind, split=plan[0])
        return plan

    def set_traffic(self, *, tenant_id: str, kind: str, split: Mapping[str, int]) -> None:
        endpoint = self.ml.online_endpoints.get(endpoint_name(tenant_id, kind))
        endpoint.traffic = check_traffic(split)
        self.ml.online_endpoints.begin_create_or_update(endpoint).result()
