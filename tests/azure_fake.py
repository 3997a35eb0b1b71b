"""A fake Azure at the HTTP transport: the real SDK clients (azure-ai-ml, azure-mgmt-compute, azure-identity,
azure-storage-blob) and our own azure-core pipelines send their requests here, and get answers in the shapes the
real services give (ARM resources, the workspace's run history and MLflow APIs, Entra ID's token endpoint, blob
storage).

The state lives in a folder (``state.json``, ``requests.jsonl``, blobs), locked per request, so a second process
(the app's watcher, started detached) sees the same Azure as the test that drives it:
``DISTILL_AZURE_TRANSPORT=azure_fake:transport`` and ``AZURE_FAKE_DIR=<folder>``, with tests/ on PYTHONPATH.

A test plays Azure's part with :class:`FakeAzure`: moves a job through its states, logs a run's events as the
node's MLflow would, fails requests (429 with Retry-After, 5xx, 401, 404, the network gone, a proxy refusing, a
server that never answers) for a number of times.

Time: a server that never answers costs the request's timeout, and the retry policy's waits cost their length; with
:meth:`FakeAzure.fake_time` both are added to a clock (:meth:`FakeAzure.clock`) instead of being slept, so a test of
a minute's silence takes milliseconds and still measures what the user would wait.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import keyring.backend
import requests
from azure.core.exceptions import (
    ServiceRequestError, ServiceRequestTimeoutError, ServiceResponseError, ServiceResponseTimeoutError,
)
from azure.core.configuration import ConnectionConfiguration
from azure.core.pipeline.transport import HttpTransport
from azure.core.pipeline.transport._requests_basic import RequestsTransportResponse

FAKE_DIR_ENV = "AZURE_FAKE_DIR"
SUB = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "66666666-7777-8888-9999-000000000000"
RG, WS, REGION = "distill-rg", "distill-ws", "eastus"
ACCOUNT = "distillstore"
VAULT = "distillkv"
ARM = "https://management.azure.com"
API = f"https://{REGION}.api.azureml.ms"
WS_ID = (f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.MachineLearningServices/workspaces/{WS}")


def _blank_state() -> dict[str, Any]:
    return {"workspace": True, "jobs": {}, "computes": {}, "assets": {}, "metrics": {}, "tags": {}, "logs": {},
            "faults": [], "tokens": 0, "cancel_polls": {}}


class FakeAzure:
    """The fake's state and the test's controls."""

    def __init__(self, folder: str | Path) -> None:
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "state.json").exists():
            self._save(_blank_state())

    # ---- state ----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        with open(self.dir / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = json.loads((self.dir / "state.json").read_text())
            try:
                yield state
            finally:            # a request that then fails (its answer lost) has still changed Azure
                self._save(state)

    def _save(self, state) -> None:
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.dir / "state.json")

    def state(self) -> dict[str, Any]:
        return json.loads((self.dir / "state.json").read_text())

    def requests(self) -> list[dict[str, Any]]:
        path = self.dir / "requests.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    # ---- the test's controls ----------------------------------------------------------------------------------
    def fail(self, method: str, url_pattern: str, status: int = 0, times: int = 1, headers: dict | None = None,
             code: str = "Failure", message: str = "injected", network: bool | str = False, after: bool = False,
             silent: str = "") -> None:
        """The next ``times`` requests matching fail: with ``status`` and an ARM error body, or (``network``) as if
        the connection was lost (``network="proxy"``: a proxy refused it, requests' ``ProxyError``); ``after``: the
        request is carried out first and only its answer is lost; ``silent="read"``: the server takes the request
        and never answers (the request waits its read timeout, ``after`` says whether Azure carried it out), or
        ``silent="connect"``: the connection is never accepted (it waits its connect timeout)."""
        with self.locked() as s:
            s["faults"].append({"method": method, "url": url_pattern, "status": status, "times": times,
                                "headers": headers or {}, "code": code, "message": message, "network": network,
                                "after": after, "silent": silent})

    def fake_time(self, on: bool = True) -> None:
        """Retry waits and timeouts are added to :meth:`clock` instead of being slept."""
        with self.locked() as s:
            s["fake_time"] = on

    def clock(self) -> float:
        """Seconds of waiting the fake has charged: timeouts of unanswered requests, and retry waits under
        :meth:`fake_time`."""
        return float(self.state().get("clock", 0.0))

    def wait(self, seconds: float) -> None:
        """A retry policy's wait: charged to the clock under :meth:`fake_time`, else slept."""
        with self.locked() as s:
            fake = s.get("fake_time", False)
            if fake:
                s["clock"] = s.get("clock", 0.0) + seconds
        if not fake:
            time.sleep(seconds)

    def blob_puts(self, prefix: str = "") -> list[dict[str, Any]]:
        """The blob uploads recorded (``PUT`` of a blob or block, not of its metadata)."""
        return [r for r in self.requests() if r["method"] == "PUT" and ".blob.core.windows.net" in r["url"]
                and "comp=metadata" not in r["url"] and urlsplit(r["url"]).path.startswith(prefix)]

    def serve(self, method: str, url_pattern: str, doc: Any, status: int = 200) -> None:
        """Answer requests matching ``url_pattern`` with ``doc`` (listings the fake has no model of, e.g. resource
        SKUs and usages); later calls take precedence."""
        with self.locked() as s:
            s.setdefault("canned", []).insert(0, {"method": method, "url": url_pattern, "doc": doc, "status": status})

    def set_job(self, name: str, status: str, error: str = "") -> None:
        with self.locked() as s:
            job = s["jobs"][name]
            job["properties"]["status"] = status
            if error:
                job["properties"]["properties"] = {**job["properties"].get("properties", {}), "azureml.error": error}

    def job(self, name: str) -> dict[str, Any]:
        return self.state()["jobs"][name]

    def log_events(self, run_id: str, events: list[dict[str, Any]]) -> None:
        """What the node's MLflow run holds after the engine logged ``events`` (the mapping the engine uses)."""
        from distill_studio.engine.runs.mlflow_bridge import TAG_PREFIX, to_mlflow

        with self.locked() as s:
            metrics = s["metrics"].setdefault(run_id, {})
            tags = s["tags"].setdefault(run_id, {})
            for e in events:
                values, step, ms, tag = to_mlflow(e)
                for k, v in values.items():
                    metrics.setdefault(k, []).append({"key": k, "value": v, "timestamp": ms, "step": step})
                if tag is not None:
                    tags[f"{TAG_PREFIX}{len(tags):06d}"] = tag

    def write_log(self, run_id: str, text: str) -> None:
        with self.locked() as s:
            s["logs"][run_id] = s["logs"].get(run_id, "") + text

    def set_permissions(self, actions: list[str], not_actions: list[str] | None = None) -> None:
        """What ARM's permissions API answers for the signed-in identity on the workspace (default: everything)."""
        with self.locked() as s:
            s["permissions"] = [{"actions": list(actions), "notActions": list(not_actions or []),
                                 "dataActions": [], "notDataActions": []}]

    def set_secret(self, name: str, value: str) -> None:
        """A secret in the workspace's Key Vault."""
        with self.locked() as s:
            s.setdefault("vault", {})[name] = value

    def grant(self, principal_id: str, role_id: str = "4633458b-17de-408a-b874-0445c86b69e6") -> None:
        """A role assignment on the workspace's Key Vault (default: Key Vault Secrets User)."""
        with self.locked() as s:
            s.setdefault("role_assignments", []).append({"principalId": principal_id, "roleId": role_id})

    def start_jobs_as(self, status: str) -> None:
        """Jobs created from now on start in ``status`` (default "Queued"; e.g. "Failed": a job that fails at once)."""
        with self.locked() as s:
            s["new_job_status"] = status

    def add_model(self, name: str, version: str, path: str, model_type: str = "custom_model") -> None:
        """A model asset of the workspace (what ``ml_client.models.create_or_update`` leaves behind)."""
        with self.locked() as s:
            s["assets"][f"models/{name}/{version}"] = {
                "id": f"{WS_ID}/models/{name}/versions/{version}", "name": version, "systemData": _system(),
                "properties": {"modelType": model_type, "modelUri": path, "properties": {}, "tags": {},
                               "flavors": {}}}

    def put_blob(self, path: str, data: bytes) -> None:
        p = self.dir / "blobs" / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    # ---- answering ----------------------------------------------------------------------------------------------
    def answer(self, method: str, url: str, headers: dict[str, str], body: bytes,
               timeouts: tuple[float, float] = (300.0, 300.0)) -> tuple[int, dict, bytes]:
        """``timeouts``: the request's connect and read timeouts, as the transport would apply them."""
        with self.locked() as s:
            self._record(method, url, headers, body)
            for f in s["faults"]:
                if f["times"] > 0 and f["method"] in (method, "*") and re.search(f["url"], url):
                    f["times"] -= 1
                    host = urlsplit(url).netloc
                    if f.get("silent") == "connect":
                        s["clock"] = s.get("clock", 0.0) + timeouts[0]
                        err = requests.exceptions.ConnectTimeout(
                            f"HTTPSConnectionPool(host='{host}', port=443): Max retries exceeded (Caused by "
                            f"ConnectTimeoutError('Connection to {host} timed out. (connect timeout={timeouts[0]})'))")
                        raise ServiceRequestTimeoutError(err, error=err)
                    if f.get("silent") == "read":
                        if f.get("after"):
                            _route(self, s, method, url, headers, body)
                        s["clock"] = s.get("clock", 0.0) + timeouts[1]
                        err = requests.exceptions.ReadTimeout(
                            f"HTTPSConnectionPool(host='{host}', port=443): Read timed out. "
                            f"(read timeout={timeouts[1]})")
                        raise ServiceResponseTimeoutError(err, error=err)
                    if f.get("after"):
                        _route(self, s, method, url, headers, body)
                        raise ServiceResponseError("Connection reset while reading the answer (fake)")
                    if f["network"] == "proxy":
                        err = requests.exceptions.ProxyError(
                            f"HTTPSConnectionPool(host='{host}', port=443): Max retries exceeded (Caused by "
                            "ProxyError('Unable to connect to proxy', OSError('Tunnel connection failed: 502 Bad "
                            "Gateway')))")
                        raise ServiceRequestError(err, error=err)
                    if f["network"]:
                        raise ServiceRequestError("Connection aborted: the network is unreachable (fake)")
                    return f["status"], {"content-type": "application/json", **f["headers"]}, json.dumps(
                        {"error": {"code": f["code"], "message": f["message"]}}).encode()
            return _route(self, s, method, url, headers, body)

    def _record(self, method, url, headers, body) -> None:
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body or "")
        with open(self.dir / "requests.jsonl", "a") as f:
            f.write(json.dumps({"method": method, "url": url, "body": text[:20000],
                                "auth": headers.get("Authorization", "")[:40],
                                "client_request_id": headers.get("x-ms-client-request-id", "")}) + "\n")


def _json(status: int, doc: Any, headers: dict | None = None) -> tuple[int, dict, bytes]:
    return status, {"content-type": "application/json", **(headers or {})}, json.dumps(doc).encode()


def _not_found(what: str) -> tuple[int, dict, bytes]:
    return _json(404, {"error": {"code": "ResourceNotFound", "message": f"{what} was not found"}})


def _system() -> dict[str, str]:
    return {"createdAt": "2026-12-01T10:00:00Z", "createdBy": "fake", "lastModifiedAt": "2026-12-01T10:00:00Z"}


def _route(fake: FakeAzure, s: dict, method: str, url: str, headers: dict, body: bytes):
    for c in s.get("canned", []):
        if c["method"] == method and re.search(c["url"], url):
            return _json(c["status"], c["doc"])
    parts = urlsplit(url)
    host, path, query = parts.netloc, unquote(parts.path), parse_qs(parts.query)
    # ---- Entra ID ----
    if host == "login.microsoftonline.com":
        if path.endswith("/token"):
            s["tokens"] += 1
            return _json(200, {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600,
                               "access_token": f"fake-access-token-{s['tokens']}"})
        tenant = path.strip("/").split("/")[0]
        if "openid-configuration" in path:
            base = f"https://login.microsoftonline.com/{tenant}"
            return _json(200, {"token_endpoint": f"{base}/oauth2/v2.0/token",
                               "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                               "issuer": f"https://login.microsoftonline.com/{TENANT}/v2.0",
                               "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode"})
        if "discovery/instance" in path:
            return _json(200, {"tenant_discovery_endpoint":
                               "https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration",
                               "metadata": [{"preferred_network": "login.microsoftonline.com",
                                             "preferred_cache": "login.windows.net",
                                             "aliases": ["login.microsoftonline.com", "login.windows.net"]}]})
        return _not_found(path)
    # ---- Key Vault (the challenge, then the secret) ----
    if host == f"{VAULT}.vault.azure.net":
        if not headers.get("Authorization"):
            return 401, {"WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                                             'resource="https://vault.azure.net"', "content-type": "application/json"}, \
                json.dumps({"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer"}}).encode()
        m = re.fullmatch(r"/secrets/([^/]+)/?", path)
        value = s.get("vault", {}).get(m.group(1)) if m else None
        if value is None:
            return _json(404, {"error": {"code": "SecretNotFound", "message": "A secret with (name/id) was not found"}})
        return _json(200, {"value": value, "id": f"https://{host}/secrets/{m.group(1)}/1",
                           "attributes": {"enabled": True}})
    # ---- blob storage ----
    if host.endswith(".blob.core.windows.net"):
        return _blob(fake, s, method, path, query, headers, body)
    # ---- the workspace's data plane (discovery, run history, MLflow) ----
    if host == f"{REGION}.api.azureml.ms":
        if path.endswith("/discovery"):
            return _json(200, {"api": API, "catalog": API, "experimentation": API, "gallery": API,
                               "history": API, "hyperdrive": API, "labeling": API, "modelmanagement": API,
                               "pipelines": API, "studio": "https://ml.azure.com"})
        m = re.search(r"/runs/([^/]+)/details$", path)
        if m and "/history/" in path:
            run = m.group(1)
            if run not in s["jobs"]:
                return _not_found(f"run {run}")
            logs = {"user_logs/std_log.txt": f"https://{ACCOUNT}.blob.core.windows.net/azureml/ExperimentRun/"
                                             f"dcid.{run}/user_logs/std_log.txt?sv=2026&sig=fakesas"}
            return _json(200, {"runId": run, "status": s["jobs"][run]["properties"]["status"], "logFiles": logs})
        if "/mlflow/" in path:
            run = (query.get("run_id") or [""])[0]
            if run not in s["jobs"]:
                return _json(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": f"run {run} not found"})
            metrics = s["metrics"].get(run, {})
            if path.endswith("/runs/get"):
                # snapshot_lag: the listing trails what get-history already returns (a step logged in between)
                lag = s.get("snapshot_lag", 0)
                latest = []
                for points in metrics.values():
                    steps = sorted({p["step"] for p in points})
                    seen = [p for p in points if not lag or p["step"] <= steps[max(0, len(steps) - 1 - lag)]]
                    if seen:
                        latest.append(max(seen, key=lambda p: p["step"]))
                tags = [{"key": k, "value": v} for k, v in s["tags"].get(run, {}).items()]
                return _json(200, {"run": {"info": {"run_id": run, "status": "RUNNING"},
                                           "data": {"metrics": latest, "tags": tags}}})
            if path.endswith("/metrics/get-history"):
                key = query["metric_key"][0]
                points = metrics.get(key, [])
                size = int((query.get("max_results") or ["1000"])[0])
                start = int((query.get("page_token") or ["0"])[0])
                doc = {"metrics": points[start:start + size]}
                if start + size < len(points):
                    doc["next_page_token"] = str(start + size)
                return _json(200, doc)
        return _not_found(path)
    # ---- ARM ----
    if host != "management.azure.com":
        return _not_found(url)
    vault_id = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{VAULT}"
    if path.lower() == vault_id.lower() and method == "GET":       # the vault resource: RBAC authorization
        return _json(200, {"id": vault_id, "name": VAULT, "location": REGION, "properties": {
            "enableRbacAuthorization": True, "vaultUri": f"https://{VAULT}.vault.azure.net/", "accessPolicies": []}})
    if path.lower() == f"{vault_id}/providers/Microsoft.Authorization/roleAssignments".lower() and method == "GET":
        wanted = re.search(r"principalId eq '([^']+)'", (query.get("$filter") or [""])[0])
        return _json(200, {"value": [
            {"id": f"{vault_id}/providers/Microsoft.Authorization/roleAssignments/{i}", "name": str(i),
             "properties": {"principalId": a["principalId"], "scope": vault_id, "roleDefinitionId":
                            f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{a['roleId']}"}}
            for i, a in enumerate(s.get("role_assignments", []))
            if not wanted or a["principalId"] == wanted.group(1)]})
    if not path.lower().startswith(WS_ID.lower()):
        return _not_found(path)
    if not s["workspace"]:
        return _json(404, {"error": {"code": "ResourceNotFound", "message": f"The Resource "
                                     f"'Microsoft.MachineLearningServices/workspaces/{WS}' under resource group "
                                     f"'{RG}' was not found."}})
    rest = path[len(WS_ID):]
    if rest == "/providers/Microsoft.Authorization/permissions" and method == "GET":
        return _json(200, {"value": s.get("permissions", [{"actions": ["*"], "notActions": [],
                                                           "dataActions": [], "notDataActions": []}])})
    if rest in ("", "/"):
        return _json(200, {"id": WS_ID, "name": WS, "location": REGION, "type":
                           "Microsoft.MachineLearningServices/workspaces", "properties": {
                               "mlFlowTrackingUri": f"azureml://{REGION}.api.azureml.ms/mlflow/v1.0{WS_ID}",
                               "discoveryUrl": f"{API}/discovery", "workspaceId": "fake-workspace-id",
                               "keyVault": f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
                                           f"Microsoft.KeyVault/vaults/{VAULT}",
                               "storageAccount": f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
                                                 f"Microsoft.Storage/storageAccounts/{ACCOUNT}"}})
    m = re.fullmatch(r"/computes/([^/]+)", rest)
    if m:
        name = m.group(1)
        if method == "GET":
            return _json(200, s["computes"][name]) if name in s["computes"] else _not_found(f"compute {name}")
        if method == "PUT":
            doc = json.loads(body)
            doc.update({"id": WS_ID + rest, "name": name, "location": REGION})
            doc["properties"]["provisioningState"] = "Succeeded"
            if "systemassigned" in str((doc.get("identity") or {}).get("type", "")).lower().replace("_", ""):
                import uuid

                doc["identity"] = {**doc["identity"], "tenantId": TENANT,
                                   "principalId": str(uuid.uuid5(uuid.NAMESPACE_URL, WS_ID + rest))}
            s["computes"][name] = doc
            return _json(200, doc)
    if rest == "/jobs" and method == "GET":
        return _json(200, {"value": list(s["jobs"].values())})
    m = re.fullmatch(r"/jobs/([^/]+)(/cancel)?", rest)
    if m:
        name = m.group(1)
        if m.group(2):
            if name not in s["jobs"]:
                return _not_found(f"job {name}")
            s["jobs"][name]["properties"]["status"] = "CancelRequested"
            return 202, {"Location": f"{ARM}{WS_ID}/operationResults/cancel-{name}?api-version=2024-04-01",
                         "Retry-After": "0", "content-type": "application/json"}, b""
        if method == "GET":
            return _json(200, s["jobs"][name]) if name in s["jobs"] else _not_found(f"job {name}")
        if method == "PUT":
            if name in s["jobs"]:
                return _json(409, {"error": {"code": "Conflict", "message": f"job {name} already exists"}})
            doc = json.loads(body)
            doc.update({"id": WS_ID + rest, "name": name, "type": "Microsoft.MachineLearningServices/workspaces/jobs",
                        "systemData": _system()})
            doc["properties"]["status"] = s.get("new_job_status", "Queued")
            doc["properties"]["services"] = {"Studio": {"jobServiceType": "Studio", "endpoint":
                                                        f"https://ml.azure.com/runs/{name}?wsid={WS_ID}"}}
            s["jobs"][name] = doc
            return _json(201, doc)
    if re.fullmatch(r"/operationResults/cancel-[^/]+", rest):
        return 200, {"content-type": "application/json"}, b""
    m = re.fullmatch(r"/(environments|codes|data|models)/([^/]+)/versions/([^/:]+)([/:]startPendingUpload)?", rest)
    if m:
        kind, name, version, pending = m.groups()
        key = f"{kind}/{name}/{version}"
        if pending:
            # a new temporary place for each pending upload, as Azure ML gives one (never a place an earlier
            # upload marked complete)
            s["pending_uploads"] = s.get("pending_uploads", 0) + 1
            where = name if s["pending_uploads"] == 1 else f"{name}-{s['pending_uploads']}"
            return _json(200, {"blobReferenceForConsumption": {
                "blobUri": f"https://{ACCOUNT}.blob.core.windows.net/azureml-blobstore/{where}",
                "credential": {"credentialType": "SAS", "sasUri":
                               f"https://{ACCOUNT}.blob.core.windows.net/azureml-blobstore/{where}?sv=2026&sig=fake"}},
                "pendingUploadId": where, "pendingUploadType": "TemporaryBlobReference"})
        if method == "GET":
            return _json(200, s["assets"][key]) if key in s["assets"] else _not_found(key)
        if method == "PUT":
            doc = json.loads(body)
            doc.update({"id": WS_ID + rest, "name": version, "systemData": _system()})
            if kind == "models":           # the service answers a model version with its flavors, {} for none
                doc.setdefault("properties", {}).setdefault("flavors", {})
            s["assets"][key] = doc
            return _json(200, doc)
    m = re.fullmatch(r"/(environments|codes|data|models)/([^/]+)/versions", rest)
    if m and method == "GET":
        prefix = f"{m.group(1)}/{m.group(2)}/"
        found = [v for k, v in s["assets"].items() if k.startswith(prefix)]
        if query.get("hash"):          # the versions holding that content (what azure-ai-ml asks before uploading)
            found = [v for v in found if (v.get("properties", {}).get("properties") or {}).get("hash_sha256")
                     == query["hash"][0]]
        return _json(200, {"value": found})
    m = re.fullmatch(r"/(codes|data|environments|models)/([^/]+)", rest)
    if m and method in ("GET", "PUT"):
        doc = {"id": WS_ID + rest, "name": m.group(2), "properties": {"latestVersion": None}}
        return _json(200, doc)
    m = re.fullmatch(r"/datastores/([^/]+)(/listSecrets)?", rest)
    if m or rest == "/datastores":
        if rest.endswith("/listSecrets"):
            return _json(200, {"secretsType": "AccountKey", "key": base64.b64encode(b"fake-account-key").decode()})
        store = {"id": f"{WS_ID}/datastores/workspaceblobstore", "name": "workspaceblobstore", "properties": {
            "datastoreType": "AzureBlob", "accountName": ACCOUNT, "containerName": "azureml-blobstore",
            "endpoint": "core.windows.net", "protocol": "https", "isDefault": True,
            "credentials": {"credentialsType": "AccountKey"}}}
        if rest == "/datastores":
            return _json(200, {"value": [store]})
        return _json(200, store)
    return _not_found(f"{method} {rest}")


def _blob(fake: FakeAzure, s, method, path, query, headers, body):
    """Blob storage as the SDK uses it: upload (PUT), exists (HEAD), list (container ?comp=list) and download."""
    container, _, name = path.strip("/").partition("/")
    root = fake.dir / "blobs" / container
    if method == "GET" and name.startswith("ExperimentRun/dcid."):
        run = name.split("/")[1].removeprefix("dcid.")
        return _ranged(s["logs"].get(run, "").encode(), headers, {"content-type": "text/plain"})
    if query.get("comp") == ["list"]:
        prefix = (query.get("prefix") or [""])[0]
        items = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []
        blobs = "".join(f"<Blob><Name>{n}</Name><Properties><Content-Length>{(root / n).stat().st_size}"
                        "</Content-Length><BlobType>BlockBlob</BlobType></Properties></Blob>"
                        for n in items if n.startswith(prefix))
        xml = (f'<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="https://{ACCOUNT}.blob.'
               f'core.windows.net/" ContainerName="{container}"><Prefix>{prefix}</Prefix><Blobs>{blobs}</Blobs>'
               "<NextMarker /></EnumerationResults>")
        return 200, {"content-type": "application/xml"}, xml.encode()
    target = root / name
    key = f"{container}/{name}"
    meta = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ms-meta-")}
    if method == "PUT":
        if query.get("comp") == ["metadata"]:      # kept, as blob storage keeps it (azure-ai-ml marks uploads done)
            if not target.is_file():
                return 404, {"x-ms-error-code": "BlobNotFound"}, b""
            s.setdefault("blob_meta", {})[key] = meta
            return 200, {}, b""
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body or b"")
        s.setdefault("blob_meta", {})[key] = meta
        return 201, {"ETag": '"0x1"', "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT"}, b""
    if method in ("GET", "HEAD"):
        if not target.is_file():
            return 404, {"x-ms-error-code": "BlobNotFound"}, b""
        data = target.read_bytes()
        hdr = {"x-ms-blob-type": "BlockBlob", "ETag": '"0x1"', "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT",
               "content-type": "application/octet-stream", **s.get("blob_meta", {}).get(key, {})}
        if method == "HEAD":
            return 200, {**hdr, "Content-Length": str(len(data))}, b""
        return _ranged(data, headers, hdr)
    return 404, {}, b""


def _ranged(data: bytes, headers: dict, extra: dict):
    """A GET with ``Range``/``x-ms-range`` (206 with Content-Range, 416 past the end) or without (200)."""
    rng = headers.get("x-ms-range") or headers.get("Range") or headers.get("range") or ""
    m = re.match(r"bytes=(\d+)-(\d*)", rng)
    if not m:
        return 200, extra, data
    start = int(m.group(1))
    if start >= len(data):
        return 416, {"Content-Range": f"bytes */{len(data)}"}, b""
    end = min(len(data) - 1, int(m.group(2)) if m.group(2) else len(data) - 1)
    return 206, {**extra, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start:end + 1]


class CannedTransport(HttpTransport):
    """An azure-core transport that answers without a network: subclasses decide the answer, :meth:`reply` builds it
    in the response type the request's pipeline expects."""

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass

    def open(self):
        pass

    def close(self):
        pass

    @staticmethod
    def reply(request, status: int, headers: dict, content: bytes, stream: bool = False):
        r = requests.Response()
        r.status_code = status
        r.headers.update(headers)
        r.headers.setdefault("Content-Length", str(len(content)))
        r.raw = io.BytesIO(content)
        r.url = request.url
        r.reason = "OK" if status < 400 else "Error"
        from azure.core.rest import HttpRequest as RestRequest

        if isinstance(request, RestRequest):
            from azure.core.rest._requests_basic import RestRequestsTransportResponse

            resp = RestRequestsTransportResponse(request=request, internal_response=r)
            if not stream:    # a streamed download reads the body itself
                resp.read()
            return resp
        return RequestsTransportResponse(request, r)


class FakeTransport(CannedTransport):
    """An azure-core transport that answers from a :class:`FakeAzure`. Its timeouts are configured and taken per
    request as azure-core's ``RequestsTransport`` takes them (``connection_config``, ``connection_timeout`` and
    ``read_timeout`` keywords; 300 s each unless set), and its :meth:`sleep` (the retry policy's waits) goes through
    the fake's clock."""

    def __init__(self, fake: FakeAzure, **kwargs) -> None:
        self.fake = fake
        self.connection_config = ConnectionConfiguration(**kwargs)

    def sleep(self, duration):
        self.fake.wait(duration)

    def send(self, request, **kwargs):
        body = request.data if hasattr(request, "data") and isinstance(getattr(request, "data"), (bytes, str)) \
            else request.body
        if body is None and getattr(request, "files", None):
            body = b""
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        timeouts = (kwargs.get("connection_timeout", self.connection_config.timeout),
                    kwargs.get("read_timeout", self.connection_config.read_timeout))
        status, headers, content = self.fake.answer(request.method, request.url, dict(request.headers), body or b"",
                                                    timeouts=timeouts)
        return self.reply(request, status, headers, content, stream=bool(kwargs.get("stream")))


_installed: dict[str, Any] = {}


def transport(fake: FakeAzure | None = None) -> FakeTransport:
    """The transport for ``DISTILL_AZURE_TRANSPORT=azure_fake:transport``; blob storage clients made inside
    azure-ai-ml are pointed at it too (azure-ai-ml builds them without passing a transport on)."""
    fake = fake or FakeAzure(os.environ[FAKE_DIR_ENV])
    t = FakeTransport(fake)
    from azure.ai.ml._artifacts import _blob_storage_helper as helper
    from azure.storage.blob import BlobServiceClient, ContainerClient

    class _Service(BlobServiceClient):
        def __init__(self, *a, **kw):
            kw.setdefault("transport", _installed["t"])
            super().__init__(*a, **kw)

    class _Container(ContainerClient):
        @classmethod
        def from_container_url(cls, url, credential=None, **kw):
            kw.setdefault("transport", _installed["t"])
            return ContainerClient.from_container_url(url, credential=credential, **kw)

    _installed["t"] = t
    helper.BlobServiceClient = _Service
    helper.ContainerClient = _Container
    return t


class FileKeyring(keyring.backend.KeyringBackend):
    """A keyring backend for tests that keeps its passwords in the fake's folder (outside every folder the app
    writes), so a subprocess sees what the test stored. Selected by PYTHON_KEYRING_BACKEND only."""

    @keyring.backend.properties.classproperty
    def priority(cls):
        return 0.1

    def _path(self) -> Path:
        return Path(os.environ[FAKE_DIR_ENV]) / "keyring.json"

    def _load(self) -> dict:
        p = self._path()
        return json.loads(p.read_text()) if p.exists() else {}

    def get_password(self, service, username):
        return self._load().get(f"{service}|{username}")

    def set_password(self, service, username, password):
        d = self._load()
        d[f"{service}|{username}"] = password
        self._path().parent.mkdir(parents=True, exist_ok=True)
        self._path().write_text(json.dumps(d))

    def delete_password(self, service, username):
        d = self._load()
        if d.pop(f"{service}|{username}", None) is None:
            raise keyring.errors.PasswordDeleteError("not found")
        self._path().write_text(json.dumps(d))


def settings_doc(sign_in: str = "service-principal") -> dict[str, Any]:
    """The app's settings for the fake workspace."""
    return {"version": 1, "azure": {"subscription_id": SUB, "resource_group": RG, "workspace": WS, "region": REGION,
                                    "tenant_id": TENANT, "client_id": CLIENT, "sign_in": sign_in}}


def wait_for(predicate, timeout: float = 30.0, step: float = 0.1):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")
