"""Signing in to Azure and the clients every Azure command uses, with one retry policy and one translation of
Azure's errors into messages a user can act on.

- **Workspace**: subscription, resource group, workspace and region come from the app's settings
  (``settings.json``, the Settings dialog's Azure tab), the same for the app and ``distill azure``.
- **Credentials** (azure-identity): the browser (interactive sign-in, its token cache kept encrypted by the OS),
  the Azure CLI's account (``az login``), or a service principal whose client secret is read from the OS keyring
  (``secrets.py``) at the moment it is needed and handed to azure-identity only.
- **Retries**: azure-core's retry policy on every client, with its counts stated (:data:`RETRY`): throttling (429)
  and server errors (5xx) are retried :func:`status_retries` times with exponential back-off, honouring
  ``Retry-After``; a lost connection or an unanswered request is retried too; a request that still fails becomes an
  :class:`AzureError` whose message gives the number of retries made.
- **Timeouts**: every control-plane request has a connect timeout of :data:`CONNECT_TIMEOUT_S` and a read timeout
  of :data:`READ_TIMEOUT_S` (azure-core's own default is 300 s each, so a silent server cost 20 minutes); with the
  retries that is at most :func:`worst_case_s` seconds before "could not reach Azure". Blob uploads and downloads
  keep azure-storage-blob's longer timeouts (20 s to connect, 60 s per block read).
- **An expired token**: a 401 on a read is answered once with a fresh token (:meth:`Azure.fresh_on_401`), never
  blamed on the client secret.
- **Transport**: the real one, or the one named by ``DISTILL_AZURE_TRANSPORT=module:callable`` (an azure-core
  ``HttpTransport`` factory). That seam exists for tests and offline demos, which answer Azure's REST calls
  without a network; everything above it (azure-ai-ml, azure-mgmt-compute, azure-identity) is the real SDK.

Every Azure SDK import is inside a function: the planner and the app start without them.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import AzureError

TRANSPORT_ENV = "DISTILL_AZURE_TRANSPORT"
ARM_SCOPE = "https://management.azure.com/.default"
# total: every retry of a request counts here; status: those after a 429 or 5xx answer; connect: after a connection
# that failed (the request never reached Azure); read: after a request sent but never answered
RETRY = {"retry_total": 3, "retry_connect": 3, "retry_read": 2, "retry_status": 3, "retry_backoff_factor": 1.0,
         "retry_backoff_max": 60}
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 20.0
LOGIN_HOSTS = ("login.microsoftonline.com", "login.windows.net", "login.microsoftonline.us", "login.chinacloudapi.cn")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")
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
    import azure.ai.ml  # noqa: F401  (its import sets the level this undoes)

    for name in ("azure.ai.ml", "azure.identity", "azure.core.pipeline.policies.http_logging_policy"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.ERROR)
        for handler in logger.handlers:          # azure-ai-ml's own handler writes to stderr: no colour codes
            if not any(isinstance(f, _NoAnsi) for f in handler.filters):
                handler.addFilter(_NoAnsi())


def plain(text: str) -> str:
    """``text`` without ANSI escape sequences (azure-ai-ml colours its messages with colorama)."""
    return ANSI.sub("", text)


class _NoAnsi(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = plain(record.getMessage()), ()
        return True


@contextlib.contextmanager
def sdk_output(say=None):
    """Around an azure-ai-ml call that uploads: what it prints to stdout or stderr (colour resets, upload notes) is
    caught; its lines with text in them are passed to ``say`` without colour codes, the rest is dropped."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        for line in plain(out.getvalue() + err.getvalue()).splitlines():
            if line.strip() and say is not None:
                say(line.strip())


def status_retries() -> int:
    """How many times a throttled (429) or failing (5xx) request is retried: the smaller of the two counts."""
    return min(RETRY["retry_total"], RETRY["retry_status"])


def worst_case_s() -> float:
    """The longest a control-plane request can take against a server that accepts connections and never answers:
    a read timeout per attempt, and the back-off between attempts."""
    attempts = 1 + min(RETRY["retry_total"], RETRY["retry_read"])
    backoff = sum(min(RETRY["retry_backoff_max"], RETRY["retry_backoff_factor"] * 2 ** (n - 1))
                  for n in range(2, attempts))
    return attempts * READ_TIMEOUT_S + backoff


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


def timeouts() -> dict[str, float]:
    return {"connection_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S}


def with_timeouts(t):
    """A transport given to the clients (the ``DISTILL_AZURE_TRANSPORT`` seam) gets the same timeouts the SDK gives
    the transport it builds from ``connection_timeout``/``read_timeout``."""
    config = getattr(t, "connection_config", None)
    if config is not None:
        config.timeout, config.read_timeout = CONNECT_TIMEOUT_S, READ_TIMEOUT_S
    return t


def client_kwargs(t=None) -> dict[str, Any]:
    """Retries and timeouts for an SDK client: azure-ai-ml passes its keyword arguments to every service client it
    makes, azure-mgmt-compute and azure-identity to theirs, and each builds its transport with the timeouts."""
    kw: dict[str, Any] = {**RETRY, **timeouts()}
    if t is not None:
        kw["transport"] = t
    return kw


class RenewableCredential:
    """The sign-in's credential, renewed on demand: after Azure refused a token it still considered valid (an
    expired token, a clock out of step), :meth:`renew` makes a new credential, whose first token is a new one (an
    azure-identity credential keeps the tokens it was given, so asking it again would give the refused one back)."""

    def __init__(self, make) -> None:
        self._make = make
        self._inner = make()

    def get_token(self, *scopes, **kwargs):
        return self._inner.get_token(*scopes, **kwargs)

    def get_token_info(self, *scopes, **kwargs):
        if hasattr(self._inner, "get_token_info"):
            return self._inner.get_token_info(*scopes, **kwargs)
        from azure.core.credentials import AccessTokenInfo

        token = self._inner.get_token(*scopes, **kwargs)
        return AccessTokenInfo(token.token, token.expires_on)

    def renew(self) -> None:
        old, self._inner = self._inner, self._make()
        with contextlib.suppress(Exception):
            old.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._inner.close()


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
        self.transport = with_timeouts(t if t is not None else transport())
        self.credential = RenewableCredential(lambda: cred) if cred is not None else \
            RenewableCredential(lambda: credential(ws, self.transport))
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

    def pipeline(self, base_url: str = "https://management.azure.com", signed: bool = True, retries: bool = True):
        """A plain azure-core pipeline with the same credential, retries, timeouts and transport (MLflow REST, log
        files). ``signed=False``: no bearer token (a SAS URL carries its own); ``retries=False``: one try."""
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy

        policies = [RetryPolicy(**RETRY) if retries else RetryPolicy.no_retries()]
        if signed:
            policies.append(BearerTokenCredentialPolicy(self.credential, ARM_SCOPE))
        kw: dict[str, Any] = {"transport": self.transport} if self.transport is not None else timeouts()
        return PipelineClient(base_url=base_url, policies=policies, **kw)

    def fresh_on_401(self, call, *args, **kwargs):
        """``call(*args, **kwargs)`` (a read); when Azure answers 401 (a token it no longer accepts), once more with a
        fresh token. A second 401 is raised as it is."""
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            if not refused_token(exc):
                raise
        self.credential.renew()
        return call(*args, **kwargs)


def _chain(exc: BaseException):
    """``exc`` and what it wraps (azure-ai-ml's ``inner_exception``, azure-core's ``exc_value``, ``__cause__``)."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 12:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "inner_exception", None), getattr(e, "exc_value", None), e.__cause__]


def _status(exc: BaseException):
    return getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)


def _from_login(exc: BaseException) -> bool:
    request = getattr(getattr(exc, "response", None), "request", None)
    url = str(getattr(request, "url", "") or "")
    return getattr(exc, "response", None) is None or any(h in url for h in LOGIN_HOSTS)


def refused_token(exc: BaseException) -> bool:
    """Whether ``exc`` is Azure answering 401 to a request (not the sign-in service refusing to give a token)."""
    return any(_status(e) == 401 and not _from_login(e) for e in _chain(exc))


def _network(exc: BaseException) -> BaseException | None:
    """The network failure in ``exc``'s chain: a connection that failed or a request not answered in time."""
    import requests
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    kinds = (ServiceRequestError, ServiceResponseError, requests.exceptions.ConnectionError,
             requests.exceptions.Timeout, ConnectionError, TimeoutError)
    return next((e for e in _chain(exc) if isinstance(e, kinds)), None)


def explain(exc: BaseException, doing: str, ws: Workspace | None = None) -> AzureError:
    """An Azure SDK error as one message: what failed while ``doing`` what, and what to do."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

    if isinstance(exc, AzureError):
        return exc
    net = _network(exc)      # before unwrapping: azure-core wraps the requests error (ProxyError, ReadTimeout)
    if net is not None:
        return _unreachable(exc, net, doing)
    inner = getattr(exc, "inner_exception", None)  # azure-ai-ml wraps the HTTP error it got
    if isinstance(inner, BaseException) and inner is not exc:
        return explain(inner, doing, ws)
    first = (plain(str(getattr(exc, "message", "") or exc)).strip().splitlines() or [""])[0][:300]
    where = f" (workspace {ws.workspace} in {ws.resource_group})" if ws else ""
    status = _status(exc)
    try:
        from azure.identity import CredentialUnavailableError
    except ImportError:  # pragma: no cover
        CredentialUnavailableError = ()  # noqa: N806
    if isinstance(exc, CredentialUnavailableError):
        return AzureError(f"Could not sign in to Azure while {doing}: {first}. Sign in with `az login` for the Azure "
                          f"CLI method, or choose another sign-in method in {SETTINGS_HINT}")
    if isinstance(exc, ClientAuthenticationError) and status == 401 and not _from_login(exc):
        return AzureError(f"Azure did not accept the sign-in's token while {doing}{where} (401), also after it was "
                          f"renewed: {first}. Sign in again; check that the tenant id in {SETTINGS_HINT} is the "
                          "workspace's tenant and that the computer's clock is right")
    if isinstance(exc, ClientAuthenticationError):
        return AzureError(f"Azure refused the sign-in while {doing}: {first}. Check the tenant id, client id and "
                          f"client secret in {SETTINGS_HINT} (a client secret expires; create a new one in the "
                          "Azure portal), or sign in again")
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return AzureError(f"Not found while {doing}{where}: {first}. Check the subscription, resource group and "
                          f"workspace in {SETTINGS_HINT}")
    if status == 429:
        return AzureError(f"Azure kept throttling requests (429) while {doing}, after {status_retries()} "
                          "retries with back-off; try again in a few minutes (nothing was submitted twice)")
    if status == 409:
        return AzureError(f"Azure reported a conflict (409) while {doing}{where}: {first}. Another operation on the "
                          "same resource is under way (a compute cluster being resized or deleted, an asset or job of "
                          "that name being created); wait a minute and try again: a job already sent is found by its "
                          "name and never sent twice")
    if status in (401, 403):
        return AzureError(f"Azure denied access while {doing}{where} ({status}): {first}. The signed-in identity "
                          "needs the Contributor or AzureML Data Scientist role on the workspace")
    if isinstance(exc, HttpResponseError) and status and status >= 500:
        return AzureError(f"Azure answered {status} while {doing}, after {status_retries()} retries with back-off: "
                          f"{first}. Try again later (nothing was submitted twice)")
    if isinstance(exc, HttpResponseError):
        return AzureError(f"Azure refused {doing}{where} ({status}): {first}")
    try:
        from azure.ai.ml.exceptions import MlException
    except ImportError:  # pragma: no cover
        MlException = ()  # noqa: N806
    if isinstance(exc, MlException):
        return AzureError(f"Azure ML refused {doing}: {first}")
    return AzureError(f"{doing} failed: {type(exc).__name__}: {first}")


def _unreachable(exc: BaseException, net: BaseException, doing: str) -> AzureError:
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    first = (plain(str(getattr(net, "message", "") or net)).strip().splitlines() or [""])[0][:300]
    timed_out = any("Timeout" in type(e).__name__ or isinstance(e, TimeoutError) for e in _chain(exc))
    if isinstance(net, ServiceResponseError) or (timed_out and not isinstance(net, ServiceRequestError)):
        tries = 1 + min(RETRY["retry_total"], RETRY["retry_read"])
        what = (f"Azure did not answer within {READ_TIMEOUT_S:.0f} s, {tries} tries" if timed_out else
                f"the connection was lost before Azure answered, {tries} tries")
    else:
        tries = 1 + min(RETRY["retry_total"], RETRY["retry_connect"])
        what = (f"no connection within {CONNECT_TIMEOUT_S:.0f} s, {tries} tries" if timed_out else
                f"no connection, {tries} tries")
    return AzureError(f"Could not reach Azure while {doing}: {what} ({type(net).__name__}: {first}). Check the "
                      "network connection (and the proxy, where one is set) and try again; nothing already "
                      "submitted is lost, and nothing is submitted twice")
