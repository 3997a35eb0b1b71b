"""Signing in to Azure and the clients every Azure command uses, with one retry policy and one translation of
Azure's errors into messages a user can act on.

- **Workspace**: subscription, resource group, workspace and region come from the app's settings
  (``settings.json``, the Settings dialog's Azure tab), the same for the app and ``distill azure``.
- **Credentials** (azure-identity): the browser (interactive sign-in, its token cache kept encrypted by the OS),
  the Azure CLI's account (``az login``), or a service principal whose client secret is read from the OS keyring
  (``secrets.py``) at the moment it is needed and handed to azure-identity only.
- **Retries**: azure-core's retry policy on every client: throttling (429) and server errors (5xx) are retried
  with exponential back-off, honouring ``Retry-After``; a request that still fails becomes an :class:`AzureError`.
- **Transport**: the real one, or the one named by ``DISTILL_AZURE_TRANSPORT=module:callable`` (an azure-core
  ``HttpTransport`` factory). That seam exists for tests and offline demos, which answer Azure's REST calls
  without a network; everything above it (azure-ai-ml, azure-mgmt-compute, azure-identity) is the real SDK.

Every Azure SDK import is inside a function: the planner and the app start without them.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

from ..errors import AzureError

TRANSPORT_ENV = "DISTILL_AZURE_TRANSPORT"
ARM_SCOPE = "https://management.azure.com/.default"
RETRY = {"retry_total": 6, "retry_backoff_factor": 1.0, "retry_backoff_max": 60}
SETTINGS_HINT = "Settings › Azure"


@dataclass(frozen=True)
class Workspace:
    subscription_id: str
    resource_group: str
    workspace: str
    region: str
    sign_in: str = "browser"
    tenant_id: str = ""
    client_id: str = ""
    compute: str = ""
    hf_token_secret: str = ""

    @property
    def arm_id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers/"
                "Microsoft.MachineLearningServices/workspaces/" + self.workspace)

    def public(self) -> dict[str, str]:
        """What a run folder records about where it runs (no secret: the client secret is never in here)."""
        return {"subscription_id": self.subscription_id, "resource_group": self.resource_group,
                "workspace": self.workspace, "region": self.region}


def workspace_from_settings(settings=None) -> Workspace:
    """The workspace of the app's settings; a missing field is named with where to set it."""
    if settings is None:
        from ..settings import load_settings

        settings, _ = load_settings()
    az = settings.azure
    missing = [label for label, value in (("subscription id", az.subscription_id),
                                          ("resource group", az.resource_group), ("workspace", az.workspace))
               if not value.strip()]
    if az.sign_in == "service-principal":
        missing += [label for label, value in (("tenant id", az.tenant_id), ("client id", az.client_id))
                    if not value.strip()]
    if missing:
        raise AzureError(f"Azure is not set up: {', '.join(missing)} missing; enter them in {SETTINGS_HINT} "
                         "(see the README's Azure set-up)")
    return Workspace(subscription_id=az.subscription_id.strip(), resource_group=az.resource_group.strip(),
                     workspace=az.workspace.strip(), region=az.region.strip(), sign_in=az.sign_in,
                     tenant_id=az.tenant_id.strip(), client_id=az.client_id.strip(), compute=az.compute.strip(),
                     hf_token_secret=az.hf_token_secret.strip())


def quiet_sdk() -> None:
    """azure-ai-ml sets its own logger to INFO with a handler when imported, and announces every experimental
    schema class it loads and every upload with a progress bar; the commands say what happens in their own words."""
    import logging

    import azure.ai.ml  # noqa: F401  (its import sets the level this undoes)

    for name in ("azure.ai.ml", "azure.identity", "azure.core.pipeline.policies.http_logging_policy"):
        logging.getLogger(name).setLevel(logging.ERROR)


def status_text(job) -> str:
    """A job's status as Azure ML writes it ("Queued", "Running", ...), not the SDK enum's repr."""
    status = getattr(job, "status", job)
    return str(getattr(status, "value", status) or "")


def transport():
    """The transport named by ``DISTILL_AZURE_TRANSPORT`` (tests, offline demos), else None (the SDK's own)."""
    spec = os.environ.get(TRANSPORT_ENV, "")
    if not spec:
        return None
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name or "transport")()
    except (ImportError, AttributeError) as exc:
        raise AzureError(f"{TRANSPORT_ENV}={spec}: {exc}") from None


def client_kwargs(t=None) -> dict[str, Any]:
    kw: dict[str, Any] = dict(RETRY)
    if t is not None:
        kw["transport"] = t
    return kw


def credential(ws: Workspace, t=None):
    """An azure-identity credential for the workspace's sign-in method."""
    from azure.identity import AzureCliCredential, ClientSecretCredential, InteractiveBrowserCredential

    kw = client_kwargs(t)
    if ws.sign_in == "service-principal":
        from .secrets import load_client_secret

        secret = load_client_secret(ws.tenant_id, ws.client_id)
        if not secret:
            raise AzureError(f"No client secret is stored for the service principal {ws.client_id}: enter it in "
                             f"{SETTINGS_HINT} (it is kept in the OS keyring), or choose the browser or Azure CLI "
                             "sign-in there")
        return ClientSecretCredential(ws.tenant_id, ws.client_id, secret, **kw)
    if ws.sign_in == "azure-cli":
        return AzureCliCredential(tenant_id=ws.tenant_id or None)
    # The token cache is kept encrypted by the OS (libsecret, Keychain, DPAPI), never in a plain file. Where the
    # OS has no such store, the token lives in memory only: each process signs in once.
    persist = {}
    if _encrypted_cache_available():
        from azure.identity import TokenCachePersistenceOptions

        persist = {"cache_persistence_options": TokenCachePersistenceOptions(name="distill-studio")}
    return InteractiveBrowserCredential(tenant_id=ws.tenant_id or None, **persist, **kw)


def _encrypted_cache_available() -> bool:
    """Whether msal-extensions can keep an encrypted token cache here (on Linux it needs libsecret)."""
    import sys

    if sys.platform in ("win32", "darwin"):
        return True
    try:
        from msal_extensions.libsecret import trial_run

        trial_run()
        return True
    except Exception:  # noqa: BLE001 — no libsecret, no D-Bus session, a locked keyring
        return False


class Azure:
    """The clients of one workspace, sharing a credential and a transport."""

    def __init__(self, ws: Workspace, cred=None, t=None) -> None:
        self.ws = ws
        self.transport = t if t is not None else transport()
        self.credential = cred if cred is not None else credential(ws, self.transport)
        self._ml = None
        self._compute = None

    @property
    def ml(self):
        if self._ml is None:
            from azure.ai.ml import MLClient

            quiet_sdk()
            self._ml = MLClient(self.credential, self.ws.subscription_id, self.ws.resource_group,
                                self.ws.workspace, show_progress=False, **client_kwargs(self.transport))
        return self._ml

    def ml_for_request(self, request_id: str):
        """An MLClient whose every request carries ``x-ms-client-request-id: request_id`` (a submission's id, so
        Azure's logs tie its retries together; azure-ai-ml takes no per-call id)."""
        from azure.ai.ml import MLClient

        quiet_sdk()
        return MLClient(self.credential, self.ws.subscription_id, self.ws.resource_group, self.ws.workspace,
                        show_progress=False, request_id=request_id, **client_kwargs(self.transport))

    @property
    def compute_mgmt(self):
        if self._compute is None:
            from azure.mgmt.compute import ComputeManagementClient

            self._compute = ComputeManagementClient(self.credential, self.ws.subscription_id,
                                                    **client_kwargs(self.transport))
        return self._compute

    def pipeline(self):
        """A plain azure-core pipeline with the same credential, retries and transport (MLflow REST, log files)."""
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy

        policies = [RetryPolicy(**RETRY), BearerTokenCredentialPolicy(self.credential, ARM_SCOPE)]
        kw = {"transport": self.transport} if self.transport is not None else {}
        return PipelineClient(base_url="https://management.azure.com", policies=policies, **kw)


def explain(exc: BaseException, doing: str, ws: Workspace | None = None) -> AzureError:
    """An Azure SDK error as one message: what failed while ``doing`` what, and what to do."""
    from azure.core.exceptions import (
        ClientAuthenticationError, HttpResponseError, ResourceNotFoundError, ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, AzureError):
        return exc
    inner = getattr(exc, "inner_exception", None)  # azure-ai-ml wraps the HTTP error it got
    if isinstance(inner, BaseException) and inner is not exc:
        return explain(inner, doing, ws)
    first = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [""])[0][:300]
    where = f" (workspace {ws.workspace} in {ws.resource_group})" if ws else ""
    try:
        from azure.identity import CredentialUnavailableError
    except ImportError:  # pragma: no cover
        CredentialUnavailableError = ()  # noqa: N806
    if isinstance(exc, CredentialUnavailableError):
        return AzureError(f"Could not sign in to Azure while {doing}: {first}. Sign in with `az login` for the Azure "
                          f"CLI method, or choose another sign-in method in {SETTINGS_HINT}")
    if isinstance(exc, ClientAuthenticationError):
        return AzureError(f"Azure refused the sign-in while {doing}: {first}. Check the tenant id, client id and "
                          f"client secret in {SETTINGS_HINT} (a client secret expires; create a new one in the "
                          "Azure portal), or sign in again")
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return AzureError(f"Could not reach Azure while {doing} ({type(exc).__name__}: {first}). Check the network "
                          "connection and try again; nothing already submitted is lost")
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return AzureError(f"Not found while {doing}{where}: {first}. Check the subscription, resource group and "
                          f"workspace in {SETTINGS_HINT}")
    if status == 429:
        return AzureError(f"Azure kept throttling requests (429) while {doing}, after {RETRY['retry_total']} "
                          "retries with back-off; try again in a few minutes (nothing was submitted twice)")
    if status in (401, 403):
        return AzureError(f"Azure denied access while {doing}{where} ({status}): {first}. The signed-in identity "
                          "needs the Contributor or AzureML Data Scientist role on the workspace")
    if isinstance(exc, HttpResponseError) and status and status >= 500:
        return AzureError(f"Azure answered {status} while {doing}, after retrying: {first}. Try again later")
    if isinstance(exc, HttpResponseError):
        return AzureError(f"Azure refused {doing}{where} ({status}): {first}")
    try:
        from azure.ai.ml.exceptions import MlException
    except ImportError:  # pragma: no cover
        MlException = ()  # noqa: N806
    if isinstance(exc, MlException):
        return AzureError(f"Azure ML refused {doing}: {first}")
    return AzureError(f"{doing} failed: {type(exc).__name__}: {first}")
