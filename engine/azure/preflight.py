"""Pre-flight of an Azure plan: everything a job needs that can be checked before anything is created or uploaded.

``distill azure preflight PLAN`` (and ``distill azure submit``, first) reads, and only reads:

- **permission**: ARM's permissions API on the workspace (``GET {workspace}/providers/Microsoft.Authorization/
  permissions``) gives the signed-in identity's actions and not-actions; it must be allowed
  ``Microsoft.MachineLearningServices/workspaces/jobs/write``, and ``.../computes/write`` when the cluster has to be
  created or grown. Wildcards match as ARM matches them (``*``, ``Microsoft.MachineLearningServices/*``).
- **quota**: the region's sizes and quota read now (``capacity.refresh_capacity``; the cached check when Azure's
  listing does not answer) for each size the plan runs on, at its priority and node count: a shortfall names the
  quota family and how many vCPUs to request.
- **data**: each data input of the plan. A datastore URI (``azureml://datastores/NAME/paths/P``) is listed through
  the datastore's storage account (azure-storage-blob, the same transport as every other client); a local file or
  folder (uploaded at submission) must exist. The size is compared with the plan's token count per epoch at about
  4 bytes per token of text: far less data than the plan counts on is a failure, the ratio found is always said.
- **token**: a gated model (Gemma, Llama: licences that Hugging Face gates) needs a Hugging Face token secret named
  in Settings › Azure, present in the workspace's Key Vault, readable by the compute cluster's managed identity.
  That identity exists only once the cluster does, so the first job's order is: create the cluster
  (``--create-cluster``, 0 nodes when idle, nothing billed), grant the role it names to the principal id it
  prints, submit.
- **environment**: whether the job's environment (image and pins; its content hash is its version) was built in
  the workspace before. A first build takes 10-20 minutes before training starts: a note, not a failure.

Each failure says what to do. ``submit`` stops on failures unless ``--force``, which lists the risks taken and
records them in the run's ``azure.json``.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import AzureError, DistillError
from .client import SETTINGS_HINT, Azure, explain

PERMISSIONS_API = "2022-04-01"
ROLE_ASSIGNMENTS_API = "2022-04-01"
KEY_VAULT_API = "2023-07-01"
JOBS_WRITE = "Microsoft.MachineLearningServices/workspaces/jobs/write"
COMPUTES_WRITE = "Microsoft.MachineLearningServices/workspaces/computes/write"
BYTES_PER_TOKEN = 4.0          # English text in JSON lines: about 4 bytes per token (3-6 across tokenizers)
TOO_LITTLE = 1.0               # bytes per planned token below which the data cannot hold the plan's tokens
GATED_LICENSES = {"gemma", "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3"}   # gated on Hugging Face
GATED_HUB_PREFIXES = ("google/gemma", "meta-llama/")
# built-in roles that read Key Vault secrets (data plane, RBAC vaults)
SECRET_READER_ROLES = {
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
}
STATUSES = ("fail", "warn", "note", "ok")


@dataclass
class Check:
    """One finding: ``what`` (permission, quota, data, token, environment, workspace), ``status`` (fail, warn,
    note, ok), what was found, and what to do about it."""

    what: str
    status: str
    text: str
    fix: str = ""


@dataclass
class Preflight:
    plan: str
    workspace: str
    checks: list[Check] = field(default_factory=list)
    cluster: dict[str, Any] = field(default_factory=dict)

    def add(self, what: str, status: str, text: str, fix: str = "") -> Check:
        c = Check(what, status, text, fix)
        if c not in self.checks:        # the same finding for two clusters of a split plan is said once
            self.checks.append(c)
        return c

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def risks(self) -> list[str]:
        """What submitting anyway risks, one line per failure."""
        return [f"{c.what}: {c.text}" for c in self.failures]

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "workspace": self.workspace, "ok": self.ok, "cluster": self.cluster,
                "checks": [asdict(c) for c in self.checks]}

    def describe(self) -> str:
        mark = {"fail": "FAIL", "warn": "warn", "note": "note", "ok": "ok"}
        lines = [f"pre-flight of {self.plan} in workspace {self.workspace}:"]
        for c in sorted(self.checks, key=lambda c: STATUSES.index(c.status)):
            lines.append(f"  {mark[c.status]:<4} {c.what}: {c.text}")
            if c.fix and c.status != "ok":
                lines.append(f"       → {c.fix}")
        n = len(self.failures)
        lines.append("  ready to submit" if not n else
                     f"  {n} problem{'s' if n != 1 else ''} to fix before submitting (or `distill azure submit "
                     "--force` to accept the risks)")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# ARM reads through the clients' pipeline (same sign-in, retries and transport)


def _arm_get(az: Azure, path: str, api_version: str) -> tuple[int, Any]:
    from azure.core.rest import HttpRequest

    url = f"https://management.azure.com{path}"
    url += ("&" if "?" in url else "?") + f"api-version={api_version}"
    try:
        resp = az.pipeline().send_request(HttpRequest("GET", url))
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"reading {path.rsplit('/providers/', 1)[-1]}", az.ws) from None
    try:
        doc = resp.json() if resp.content else {}
    except ValueError:
        doc = {}
    return resp.status_code, doc


def _error_text(doc: Any) -> str:
    err = doc.get("error", {}) if isinstance(doc, dict) else {}
    return str(err.get("message") or err.get("code") or "")[:300]


def allowed(action: str, permissions: list[dict[str, Any]]) -> bool:
    """Whether ARM's permissions (``actions``/``notActions`` of each entry) allow ``action``; wildcards match
    case-insensitively, as ARM matches them. An action is allowed by an entry that has it in ``actions`` and not in
    ``notActions``."""
    act = action.lower()

    def match(patterns) -> bool:
        return any(_pattern(str(p)).fullmatch(act) for p in patterns or [])

    return any(match(p.get("actions")) and not match(p.get("notActions")) for p in permissions)


def _pattern(text: str) -> re.Pattern:
    """An ARM action pattern as a regular expression: ``*`` is any text, and ``/*/`` also stands for no segment at
    all (``workspaces/computes/*/write`` in AzureML Data Scientist's not-actions covers ``workspaces/computes/write``:
    that role cannot create computes)."""
    parts = [re.escape(p) for p in text.lower().split("/*/")]
    return re.compile("(?:/.*/|/)".join(p.replace(r"\*", ".*") for p in parts))


def identity_name(az: Azure) -> str:
    ws = az.ws
    if ws.sign_in == "service-principal":
        return f"the service principal {ws.client_id}"
    return "your signed-in account" if ws.sign_in == "browser" else "the Azure CLI's signed-in account"


def check_permissions(az: Azure, report: Preflight, cluster_exists: bool | None) -> None:
    status, doc = _arm_get(az, f"{az.ws.arm_id}/providers/Microsoft.Authorization/permissions", PERMISSIONS_API)
    who = identity_name(az)
    if status != 200:
        report.add("permission", "warn", f"could not read {who}'s permissions on workspace {az.ws.workspace} "
                   f"({status}: {_error_text(doc)})", "the submission itself will say if a permission is missing")
        return
    perms = doc.get("value", []) if isinstance(doc, dict) else []
    scope = f"workspace {az.ws.workspace} (resource group {az.ws.resource_group})"
    if not allowed(JOBS_WRITE, perms):
        report.add("permission", "fail", f"{who} may not create jobs in {scope}: {JOBS_WRITE} is not allowed",
                   f"ask an owner of the workspace for the role 'AzureML Data Scientist' (or Contributor) on it: "
                   f"az role assignment create --role \"AzureML Data Scientist\" --assignee {_assignee(az)} "
                   f"--scope {az.ws.arm_id}")
    else:
        report.add("permission", "ok", f"{who} may create jobs in {scope}")
    if allowed(COMPUTES_WRITE, perms):
        report.add("permission", "ok", f"{who} may create and resize compute clusters")
    elif cluster_exists:
        report.add("permission", "note", f"{who} may not create compute clusters ({COMPUTES_WRITE}); the plan's "
                   "cluster exists and is large enough, so none is needed")
    else:
        name = report.cluster.get("name", "")
        report.add("permission", "fail", f"{who} may not create compute clusters, and the plan needs cluster "
                   f"{name} ({report.cluster.get('sku')}, up to {report.cluster.get('nodes')} nodes) created or grown",
                   f"{COMPUTES_WRITE} is not allowed in {scope}: ask for the role 'AzureML Compute Operator' on the workspace (az role assignment create --role "
                   f"\"AzureML Compute Operator\" --assignee {_assignee(az)} --scope {az.ws.arm_id}), or ask an "
                   f"owner to create cluster {name} once with `distill azure preflight PLAN --create-cluster`")


def _assignee(az: Azure) -> str:
    return az.ws.client_id if az.ws.sign_in == "service-principal" and az.ws.client_id else "<your user name>"


# --------------------------------------------------------------------------------------------------------
# Quota


def _capacity():
    """The capacity functions: refreshing is Azure's, the table and its cache live beside prices."""
    from ..catalog.capacity import load_capacity
    from .capacity import refresh_capacity

    return refresh_capacity, load_capacity


def check_quota(az: Azure, report: Preflight, stages: list[tuple[str, str, int, str]]) -> None:
    """``stages``: (what, sku, nodes, priority) for each job of the plan."""
    refresh, load = _capacity()
    region = az.ws.region
    table, why = None, ""
    try:
        table = refresh(az, region)
    except DistillError as exc:
        why = str(exc)
        notes: list[str] = []
        table = load(region, notes)
    if table is None:
        report.add("quota", "warn", f"quota in {region} could not be checked",
                   f"{why or 'no answer'}. Check it with `distill azure capacity --refresh`; a job short of quota "
                   "waits in the queue")
        return
    when = "now" if getattr(table, "origin", "") == "live" else f"on {table.checked_on} (cached: {why})"
    for what, sku, nodes, priority in stages:
        problem = table.problem(sku, nodes, priority)
        label = f"{what}{nodes} × {sku} ({priority})"
        if problem:
            report.add("quota", "fail", f"{label}: {problem}",
                       "request the quota named (it is granted per region and family, often within a day), or "
                       "plan with another size or priority (the planner skips sizes the quota rules out once "
                       "`distill azure capacity --refresh` has run)")
        elif table.missing_quota(sku, priority):
            rows = ", ".join(table.missing_quota(sku, priority))
            report.add("quota", "warn", f"{label}: quota unknown (Azure listed no {rows} row), checked {when}",
                       "unknown is not unlimited: look the family up in the portal (Subscriptions › Usage + quotas) "
                       "before a long run; a job short of quota waits in the queue")
        else:
            report.add("quota", "ok", f"{label}: quota is free, checked {when}")


# --------------------------------------------------------------------------------------------------------
# Data

DATASTORE_URI = re.compile(r"^azureml://(?:subscriptions/[^/]+/resource[gG]roups/[^/]+/(?:providers/"
                           r"Microsoft\.MachineLearningServices/)?workspaces/[^/]+/)?datastores/([^/]+)/paths/(.*)$")


def _size_text(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def _local_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class NoReadAccess(AzureError):
    """The signed-in identity may not list the datastore's data; the job reads it with the workspace's own
    credentials, so this is not a reason to stop."""


def _denied(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) in (401, 403)


def datastore_size(az: Azure, store: str, blob_path: str) -> tuple[int, int]:
    """(files, bytes) under ``blob_path`` of datastore ``store``: the file itself, or everything under the folder.
    :class:`NoReadAccess` where the signed-in identity may read neither the datastore's key nor its blobs."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import ContainerClient

    from .client import client_kwargs

    try:
        try:
            ds = az.ml.datastores.get(store, include_secrets=True)
        except Exception as exc:  # noqa: BLE001 — its key may be withheld (listing secrets is a right of its own)
            if not _denied(getattr(exc, "inner_exception", None) or exc):
                raise
            ds = az.ml.datastores.get(store)
    except ResourceNotFoundError:
        raise AzureError(f"datastore {store} is not in workspace {az.ws.workspace}; the workspace's default is "
                         "workspaceblobstore") from None
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"reading datastore {store}", az.ws) from None
    account = getattr(ds, "account_name", "") or ""
    container = getattr(ds, "container_name", "") or ""
    if not account or not container:
        raise AzureError(f"datastore {store} is not a blob container (type {type(ds).__name__}); its data is not "
                         "checked")
    creds = getattr(ds, "credentials", None)
    key = getattr(creds, "account_key", None) or getattr(creds, "sas_token", None)
    endpoint = getattr(ds, "endpoint", "") or "core.windows.net"
    kw = client_kwargs(az.transport)
    client = ContainerClient(f"https://{account}.blob.{endpoint}", container, credential=key or az.credential, **kw)
    prefix = blob_path.strip("/")
    files = size = 0
    try:
        for blob in client.list_blobs(name_starts_with=prefix):
            name = blob.name
            if not prefix or name == prefix or name.startswith(prefix + "/"):
                files += 1
                size += int(blob.size or 0)
    except Exception as exc:  # noqa: BLE001
        if _denied(exc):
            raise NoReadAccess(f"your sign-in may not list storage account {account} (it needs Storage Blob Data "
                               "Reader there)") from None
        raise explain(exc, f"listing {store}/{prefix} (storage account {account})", az.ws) from None
    return files, size


def check_data(az: Azure, report: Preflight, plan, base: Path, data_uri: str | None) -> None:
    from . import job as J

    notes: list[str] = []
    for key in ("data.train", "data.eval", "data.prompts"):
        section, name = key.split(".")
        value = getattr(plan.data, name)
        if key == "data.train" and data_uri:
            value = data_uri
        if not value and key == "data.train":
            value = f"{J.DATA_ROOT}/{re.sub(r'[^A-Za-z0-9_.-]+', '-', plan.name)}/"
            notes.append("the plan names no data.train, so the job reads this folder")
        if not value:
            continue
        found = _one_input(az, report, key, str(value), base, notes)
        if found is not None and key == "data.train":
            _size_against_tokens(report, plan, str(value), found)
    notes.clear()


def _one_input(az: Azure, report: Preflight, key: str, value: str, base: Path, notes: list[str]) -> int | None:
    from . import job as J

    m = DATASTORE_URI.match(value)
    origin = f" ({notes[0]})" if notes and key == "data.train" else ""
    if m:
        store, path = m.group(1), m.group(2)
        try:
            files, size = datastore_size(az, store, path)
        except NoReadAccess as exc:
            report.add("data", "warn", f"{key}: {value} could not be checked: {exc}",
                       "the job reads it with the workspace's own credentials, so this does not stop it; to have it "
                       "checked, give your sign-in Storage Blob Data Reader on that account")
            return None
        except AzureError as exc:
            report.add("data", "fail", f"{key}: {value} could not be checked: {exc}",
                       "check the datastore name in the URI, and that the signed-in identity may read it")
            return None
        if files == 0:
            report.add("data", "fail", f"{key}: nothing at {value}{origin}" if len(value) < 70 else
                   f"{key}: nothing on datastore {store} under {path}{origin}",
                       f"upload the data there before submitting (az storage blob upload-batch --account-name "
                       f"<the datastore's account> --destination <container>/{path.strip('/')} --source <folder>, or "
                       f"Azure ML studio › Data), or give another URI with --data")
            return None
        report.add("data", "ok", f"{key}: {files:,} file{'s' if files != 1 else ''}, {_size_text(size)} at {value}")
        return size
    if J.REMOTE.match(value):
        report.add("data", "note", f"{key}: {value} is not on a datastore; it is not checked before submitting")
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.exists():
        report.add("data", "fail", f"{key}: {path} does not exist",
                   "give an existing file or folder (it is uploaded at submission), or a datastore URI "
                   "(azureml://datastores/NAME/paths/...)")
        return None
    size = _local_size(path)
    if size == 0:
        report.add("data", "fail", f"{key}: {path} is empty", "give the file or folder that holds the data")
        return None
    report.add("data", "ok", f"{key}: {path} ({_size_text(size)}, uploaded at submission)")
    return size


def _size_against_tokens(report: Preflight, plan, value: str, size: int) -> None:
    tokens = plan.data.tokens
    if not tokens:
        return
    ratio = size / tokens
    expect = tokens * BYTES_PER_TOKEN
    found = (f"data.train holds {_size_text(size)} for the plan's {tokens:,} tokens per epoch: {ratio:.2f} bytes "
             f"per token (text is about {BYTES_PER_TOKEN:.0f})")
    if ratio < TOO_LITTLE:
        report.add("data", "fail", found + f"; it looks like about {size / BYTES_PER_TOKEN:,.0f} tokens, "
                   f"{size / expect:.0%} of what the plan counts on",
                   f"upload the rest (about {_size_text(expect - size)} more), or set data.tokens to about "
                   f"{int(size / BYTES_PER_TOKEN):,} and plan again (time and cost follow the token count)")
    elif ratio < BYTES_PER_TOKEN / 2 or ratio > BYTES_PER_TOKEN * 4:
        report.add("data", "warn", found + "; the estimate's time and cost follow data.tokens",
                   f"set data.tokens to about {int(size / BYTES_PER_TOKEN):,} if that is closer to the data")
    else:
        report.add("data", "ok", found)


# --------------------------------------------------------------------------------------------------------
# The Hugging Face token of a gated model


def gated_models(plan) -> list[str]:
    """The plan's models that Hugging Face gates (a licence to accept, a token to download)."""
    from ..catalog.models import load_models

    models = load_models()
    by_hub = {m.hub_id.lower(): m for m in models.values()}
    out = []
    for role in ("teacher", "student"):
        name = str(getattr(plan, role).model or "")
        spec = models.get(name.lower()) or by_hub.get(name.lower())
        if spec is not None:
            if spec.license in GATED_LICENSES:
                out.append(f"{role} {spec.hub_id}")
        elif name.lower().startswith(GATED_HUB_PREFIXES):
            out.append(f"{role} {name}")
    return out


def _principal_of(compute) -> str:
    ident = getattr(compute, "identity", None)
    return str(getattr(ident, "principal_id", "") or "")


def check_token(az: Azure, report: Preflight, plan, ws_doc, compute, *, created: bool = False) -> None:
    gated = gated_models(plan)
    if gated:                  # a model staged in the workspace is read from storage: no token is used for it
        from .models import lookup

        staged = [g for g in gated if lookup(az, g.split(" ", 1)[1]) is not None]
        if staged:
            report.add("token", "note", f"{' and '.join(staged)} staged in the workspace: the job reads "
                       f"{'it' if len(staged) == 1 else 'them'} from storage, with no Hugging Face token")
        gated = [g for g in gated if g not in staged]
    if not gated:
        return
    from .node import vault_uri

    what = " and ".join(gated)
    secret = az.ws.hf_token_secret
    vault_id = str(getattr(ws_doc, "key_vault", "") or "")
    vault = vault_uri(vault_id)
    vault_name = vault_id.rstrip("/").rsplit("/", 1)[-1] or "<the workspace's Key Vault>"
    if not secret:
        report.add("token", "fail", f"{what} is gated on Hugging Face and no token secret is named in "
                   f"{SETTINGS_HINT}: the job could not download it",
                   f"accept the model's licence on huggingface.co with your account, create a read token there, "
                   f"store it: az keyvault secret set --vault-name {vault_name} --name hf-token --value hf_..., "
                   f"and enter hf-token as the token secret in {SETTINGS_HINT}")
        return
    # the secret in the vault (read with the user's own sign-in; a user who may not read it cannot tell)
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.keyvault.secrets import SecretClient

    from .client import client_kwargs

    if not vault:
        report.add("token", "warn", f"the workspace's Key Vault is not known; secret '{secret}' is not checked")
        return
    try:
        SecretClient(vault, az.credential, **client_kwargs(az.transport)).get_secret(secret)
        report.add("token", "ok", f"secret '{secret}' is in Key Vault {vault_name}")
    except ResourceNotFoundError:
        report.add("token", "fail", f"{what} is gated, and Key Vault {vault_name} has no secret '{secret}'",
                   f"store the Hugging Face token: az keyvault secret set --vault-name {vault_name} --name {secret} "
                   "--value hf_... (a read token of an account that accepted the model's licence)")
    except HttpResponseError as exc:
        report.add("token", "note", f"secret '{secret}' in Key Vault {vault_name} could not be read with "
                   f"{identity_name(az)} ({exc.status_code}); only the cluster needs to read it")
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"reading secret {secret} in Key Vault {vault_name}", az.ws) from None
    # the cluster's identity, and its role on the vault
    name = report.cluster.get("name", "")
    if compute is None:
        report.add("token", "fail", f"gated models ({what}) need secret '{secret}' readable by cluster {name}'s identity, and "
                   "the cluster does not exist yet",
                   "create the cluster first (0 nodes when idle, nothing billed): `distill azure preflight "
                   "PLAN --create-cluster`; it prints the role to grant to the cluster's identity; then submit")
        return
    principal = _principal_of(compute)
    if not principal:
        report.add("token", "fail", f"compute cluster {name} has no managed identity to read secret '{secret}' with",
                   f"give it a system-assigned identity: az ml compute update -n {name} --identity-type "
                   f"SystemAssigned -g {az.ws.resource_group} -w {az.ws.workspace}; then run pre-flight again")
        return
    report.cluster["principal_id"] = principal
    grant = (f"az role assignment create --role \"Key Vault Secrets User\" --assignee-object-id {principal} "
             f"--assignee-principal-type ServicePrincipal --scope {vault_id}")
    status, doc = _arm_get(az, vault_id, KEY_VAULT_API)
    props = doc.get("properties", {}) if status == 200 and isinstance(doc, dict) else {}
    if status == 200 and not props.get("enableRbacAuthorization", False):
        policies = props.get("accessPolicies") or []
        ok = any(str(p.get("objectId", "")).lower() == principal.lower() and
                 {"get", "all"} & {str(x).lower() for x in (p.get("permissions", {}).get("secrets") or [])}
                 for p in policies)
        fix = (f"az keyvault set-policy --name {vault_name} --object-id {principal} --secret-permissions get")
    else:
        flt = f"principalId eq '{principal}'"
        status, doc = _arm_get(az, f"{vault_id}/providers/Microsoft.Authorization/roleAssignments?$filter={flt}",
                               ROLE_ASSIGNMENTS_API)
        if status != 200:
            report.add("token", "warn", f"could not read the role assignments on Key Vault {vault_name} "
                       f"({status}: {_error_text(doc)}); make sure cluster {name}'s identity ({principal}) has "
                       "'Key Vault Secrets User' on it", grant)
            return
        roles = [str((a.get("properties") or {}).get("roleDefinitionId", "")).rsplit("/", 1)[-1].lower()
                 for a in doc.get("value", [])]
        ok = any(r in SECRET_READER_ROLES for r in roles)
        fix = grant
    if ok:
        report.add("token", "ok", f"cluster {name}'s identity ({principal}) may read secrets in {vault_name}")
    else:
        made = "was just created; its" if created else "exists; its"
        report.add("token", "fail", f"cluster {name} {made} identity (principal id {principal}) may not read secret "
                   f"'{secret}' in Key Vault {vault_name}: the job would stop before downloading {what}",
                   f"grant it (once; it takes effect within minutes): {fix}; then run pre-flight again")


# --------------------------------------------------------------------------------------------------------
# The environment's image


def check_environment(az: Azure, report: Preflight) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    from .environment import IMAGE, build_environment

    env = build_environment()
    try:
        az.ml.environments.get(env.name, version=env.version)
        report.add("environment", "ok", f"the job's environment was built in this workspace before (version "
                   f"{env.version[:12]}…): no image build")
    except ResourceNotFoundError:
        report.add("environment", "note", "the job's image is not built in this workspace yet: the first job "
                   "waits 10-20 minutes for it before training starts (later jobs reuse it)",
                   f"{IMAGE} with the engine's pins (environment {env.name}, version {env.version[:12]}…)")
    except Exception as exc:  # noqa: BLE001
        if getattr(getattr(exc, "inner_exception", None), "status_code", None) == 404 or \
                getattr(exc, "status_code", None) == 404:
            report.add("environment", "note", "the job's environment has not been built in this workspace: the "
                       "first job waits 10-20 minutes for its image to build; later jobs reuse it")
        else:
            report.add("environment", "warn", f"whether the environment was built before is unknown "
                       f"({explain(exc, 'reading environments', az.ws)})")


# --------------------------------------------------------------------------------------------------------
# The whole check


def workspace_and_cluster(az: Azure, report: Preflight, compute_name: str):
    """(the workspace, its cluster ``compute_name`` or None) as Azure has them; None (and a failure in ``report``)
    when the workspace is not there."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        ws_doc = az.ml.workspaces.get(az.ws.workspace)
    except ResourceNotFoundError:
        report.add("workspace", "fail", f"workspace {az.ws.workspace} was not found in resource group "
                   f"{az.ws.resource_group} of subscription {az.ws.subscription_id}",
                   f"check {SETTINGS_HINT}, or create it: az ml workspace create -n {az.ws.workspace} "
                   f"-g {az.ws.resource_group}")
        return None
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"reading workspace {az.ws.workspace}", az.ws) from None
    try:
        compute = az.ml.compute.get(compute_name)
    except ResourceNotFoundError:
        compute = None
    except Exception as exc:  # noqa: BLE001
        raise explain(exc, f"looking up compute cluster {compute_name}", az.ws) from None
    return ws_doc, compute


def cluster_fits(report: Preflight, compute, compute_name: str, sku: str, nodes: int) -> bool:
    """Whether the existing cluster has the VM size and at least ``nodes`` nodes (a cluster of another size is a
    failure in ``report``; one too small is grown by submit, which needs the right to write computes)."""
    size = str(getattr(compute, "size", "") or "").lower() if compute is not None else ""
    if size and size != sku.lower():
        report.add("workspace", "fail", f"compute cluster {compute_name} exists with VM size {compute.size}, not "
                   f"{sku}", f"choose another cluster in {SETTINGS_HINT} › Compute cluster, or leave it empty "
                   "to use one named after the VM size")
    return compute is not None and (getattr(compute, "max_instances", 0) or 0) >= nodes and size == sku.lower()


def run_preflight(plan_path: Path, az: Azure, *, data_uri: str | None = None, prices=None,
                  create_cluster: bool = False, say: Callable[[str], None] | None = None) -> Preflight:
    """Check ``plan_path`` against the workspace of ``az``. Reads only, unless ``create_cluster`` (then the plan's
    compute cluster is created, 0 nodes when idle, so its identity can be given a role before the first job)."""
    from ..plan import load_plan
    from ..planner import resolve_run
    from . import job as J
    from .client import quiet_sdk

    quiet_sdk()
    plan_path = Path(plan_path)
    plan = load_plan(plan_path)
    if plan.hardware.target != "azure":
        raise AzureError(f'hardware.target: this plan runs on "{plan.hardware.target}"; pre-flight checks Azure '
                         'plans (target = "azure")')
    base = plan_path.resolve().parent
    resolved = resolve_run(plan, base, prices)
    hw = resolved.plan.hardware
    report = Preflight(plan=plan.name, workspace=az.ws.workspace)
    stages = [("", hw.sku, resolved.nodes, hw.priority)]
    if resolved.split:
        tp = resolved.split["teacher_pass"]
        stages = [("teacher's pass: ", tp["sku"], int(tp["nodes"]), hw.priority),
                  ("training: ", hw.sku, resolved.nodes, hw.priority)]
    # each job's cluster: a split plan's teacher pass runs on its own size (job.build names it the same way), and
    # that first job is the one that downloads the teacher
    clusters = [{"name": az.ws.compute if az.ws.compute and not resolved.split else J.cluster_name(hw.sku, hw.priority),
                 "sku": hw.sku, "nodes": resolved.nodes, "priority": hw.priority}]
    if resolved.split:
        tp = resolved.split["teacher_pass"]
        clusters.insert(0, {"name": J.cluster_name(tp["sku"], hw.priority), "sku": tp["sku"],
                            "nodes": int(tp["nodes"]), "priority": hw.priority})
    report.cluster = dict(clusters[0])
    found = workspace_and_cluster(az, report, clusters[0]["name"])
    if found is None:
        return report
    ws_doc = found[0]
    computes, created, short = [], [], []
    for c in clusters:
        compute = found[1] if c is clusters[0] else workspace_and_cluster(az, report, c["name"])[1]
        made = False
        if compute is None and create_cluster:
            from azure.ai.ml.entities import AmlCompute, IdentityConfiguration

            from .jobs import ensure_cluster

            cluster = AmlCompute(name=c["name"], size=c["sku"], min_instances=0, max_instances=c["nodes"],
                                 tier="low_priority" if c["priority"] == "low-priority" else "dedicated",
                                 idle_time_before_scale_down=600,
                                 identity=IdentityConfiguration(type="system_assigned"))
            ensure_cluster(az, cluster, say or (lambda _t: None))
            compute = az.ml.compute.get(c["name"])
            made = True
        if not cluster_fits(report, compute, c["name"], c["sku"], c["nodes"]):
            short.append(c)
        computes.append(compute)
        created.append(made)

    report.cluster = dict(short[0] if short else clusters[0])
    check_permissions(az, report, not short)
    check_quota(az, report, stages)
    check_data(az, report, plan, base, data_uri)
    for c, compute, made in zip(clusters, computes, created):
        report.cluster = c          # check_token adds the cluster identity's principal id to it
        check_token(az, report, plan, ws_doc, compute, created=made)
    report.cluster = clusters[0]
    check_environment(az, report)
    return report


def cmd_preflight(args) -> int:
    """`distill azure preflight PLAN [--data URI] [--create-cluster] [--json]`: exit 0 when ready, 1 when a
    problem was found (each with what to do)."""
    from .client import workspace_from_settings

    say = (lambda t: print(t, file=sys.stderr, flush=True))
    report = run_preflight(args.plan, Azure(workspace_from_settings()), data_uri=args.data,
                           create_cluster=args.create_cluster, say=say)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(report.describe())
    return 0 if report.ok else 1


__all__ = ["Check", "Preflight", "allowed", "run_preflight", "cmd_preflight", "gated_models"]
