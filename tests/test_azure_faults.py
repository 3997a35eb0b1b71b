"""Azure's faults as a user meets them, through the real SDK clients and the fake at the HTTP transport
(``tests/azure_fake.py``): each ends in one clear message within 90 s of the user's time (timeouts and retry waits
are charged to the fake's clock, so each test takes seconds), and never in two jobs."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("azure.ai.ml")

from distill_studio.engine.errors import AzureError  # noqa: E402

import azure_fake as F  # noqa: E402
from test_azure import SECRET, azure_plan, connect, fake, job_puts  # noqa: E402,F401  (fake: the fixture)

ANSI = "\x1b["
USER_WAIT_S = 90.0


def submit_fails(fake, tmp_path, run="run") -> tuple[str, float]:
    """Submit the demo plan expecting a refusal; its message and the seconds the user would have waited."""
    from distill_studio.engine.azure.jobs import submit

    t0 = time.monotonic()
    with pytest.raises(AzureError) as info:
        submit(azure_plan(tmp_path), tmp_path / run, connect(fake), say=lambda s: None)
    return str(info.value), fake.clock() + (time.monotonic() - t0)


def jobs_in_azure(fake) -> list[str]:
    return list(fake.state()["jobs"])


# ---- the network gone, a proxy refusing, a server that never answers --------------------------------------------

@pytest.mark.parametrize("case", ["proxy", "network-token", "silent-read", "silent-connect", "silent-put"])
def test_an_outage_or_a_timeout_says_azure_could_not_be_reached(fake, tmp_path, case):
    from distill_studio.engine.azure import client

    fake.fake_time()
    method, url, kw = {
        "proxy": ("GET", r"/computes/", dict(network="proxy", times=50)),
        "network-token": ("POST", r"oauth2/v2.0/token", dict(network=True, times=50)),
        "silent-read": ("GET", r"/workspaces/distill-ws\?", dict(silent="read", times=50)),
        "silent-connect": ("GET", r"/computes/", dict(silent="connect", times=50)),
        "silent-put": ("PUT", r"/jobs/", dict(silent="read", times=50)),
    }[case]
    fake.fail(method, url, **kw)
    text, waited = submit_fails(fake, tmp_path)
    assert text.startswith("Could not reach Azure while "), text
    assert "Traceback" not in text and SECRET not in text and ANSI not in text
    assert waited < USER_WAIT_S, (waited, text)
    assert len(job_puts(fake)) <= client.RETRY["retry_read"] + 1 and not jobs_in_azure(fake)
    tries = [r for r in fake.requests() if r["method"] == method and __import__("re").search(url, r["url"])]
    if case == "proxy":
        assert "ProxyError" in text and "proxy" in text
        assert len(tries) == 1 + client.RETRY["retry_connect"]
    if case.startswith("silent"):
        # each try waited its timeout (10 s to connect, 20 s for an answer), not azure-core's 300 s
        per_try = client.CONNECT_TIMEOUT_S if case == "silent-connect" else client.READ_TIMEOUT_S
        assert f"within {per_try:.0f} s, {len(tries)} tries" in text, text
        assert fake.clock() >= len(tries) * per_try
        assert fake.clock() <= client.worst_case_s() + client.READ_TIMEOUT_S  # + the one lookup after a lost PUT
    # what the run folder keeps is enough to try again: the same name, sent once
    from distill_studio.engine.azure.jobs import submit

    with fake.locked() as s:
        s["faults"] = []
    kept = json.loads((tmp_path / "run" / "azure.json").read_text())["job"]
    meta = submit(azure_plan(tmp_path), tmp_path / "run", connect(fake), say=lambda s: None)
    assert jobs_in_azure(fake) == [meta["job"]] == [kept]


def test_a_put_taken_but_never_answered_is_adopted_not_sent_twice(fake, tmp_path):
    from distill_studio.engine.azure.jobs import submit

    fake.fake_time()
    # Azure carries out each PUT and never answers: the SDK's retries meet the job it made (409), still unanswered
    fake.fail("PUT", r"/jobs/", silent="read", after=True, times=50)
    said: list[str] = []
    t0 = time.monotonic()
    meta = submit(azure_plan(tmp_path), tmp_path / "run", connect(fake), say=said.append)
    assert fake.clock() + (time.monotonic() - t0) < USER_WAIT_S
    assert jobs_in_azure(fake) == [meta["job"]]
    assert any("accepted by Azure ML although the answer was lost" in s for s in said), said


def test_the_sdk_clients_get_the_timeouts_and_the_stated_retries(tmp_path):
    """Without the test seam, every client the commands use builds its own transport: each has the timeouts and the
    retry counts the messages state (azure-core's defaults are 300 s and 10 retries)."""
    import gc

    from azure.core.credentials import AccessToken

    from distill_studio.engine.azure import client

    class Token:
        def get_token(self, *scopes, **kw):
            return AccessToken("t", int(time.time()) + 3600)

    az = client.Azure(client.Workspace("s", "rg", "ws", "eastus"), cred=Token())
    clients = [az.ml.jobs._operation_2023_02_preview._client, az.ml.compute._operation._client,
               az.ml.workspaces._operation._client, az.compute_mgmt._client, az.pipeline()]
    for c in clients:
        pipeline = c._pipeline
        transport = pipeline._transport
        assert (transport.connection_config.timeout, transport.connection_config.read_timeout) == \
               (client.CONNECT_TIMEOUT_S, client.READ_TIMEOUT_S), c
        retry = next(p for p in pipeline._impl_policies if type(p).__name__ == "RetryPolicy")
        assert (retry.total_retries, retry.status_retries, retry.read_retries, retry.connect_retries) == (
            client.RETRY["retry_total"], client.RETRY["retry_status"], client.RETRY["retry_read"],
            client.RETRY["retry_connect"]), c
    assert client.worst_case_s() <= 65
    gc.collect()


def test_a_silent_local_server_fails_within_the_timeouts(monkeypatch):
    """The real requests transport against a socket that accepts and never answers: the read timeout is applied."""
    import socket

    from distill_studio.engine.azure import client

    monkeypatch.setattr(client, "READ_TIMEOUT_S", 0.3)
    monkeypatch.setattr(client, "CONNECT_TIMEOUT_S", 0.3)
    monkeypatch.setitem(client.RETRY, "retry_backoff_factor", 0.01)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        from azure.core.credentials import AccessToken
        from azure.core.rest import HttpRequest

        class Token:
            def get_token(self, *scopes, **kw):
                return AccessToken("t", int(time.time()) + 3600)

        az = client.Azure(client.Workspace("s", "rg", "ws", "eastus"), cred=Token())
        port = server.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(Exception) as info:
            az.pipeline(base_url=f"http://127.0.0.1:{port}", signed=False).send_request(
                HttpRequest("GET", f"http://127.0.0.1:{port}/x"))
        took = time.monotonic() - t0
        text = str(client.explain(info.value, "reading the run's metrics"))
        assert text.startswith("Could not reach Azure while reading the run's metrics: Azure did not answer within"), text
        assert "3 tries" in text
        assert took < 3 * 0.3 + 2, took
    finally:
        server.close()


# ---- an expired token ---------------------------------------------------------------------------------------------

EXPIRED = {"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/common", '
                               'error="invalid_token", error_description="The access token expiry UTC time is '
                               'earlier than current UTC time."'}


def test_an_expired_token_is_renewed_once_and_the_read_retried(fake, tmp_path):
    from distill_studio.engine.azure.jobs import status, submit

    meta = submit(azure_plan(tmp_path), tmp_path / "run", connect(fake), say=lambda s: None)
    az = connect(fake)
    assert status(az, tmp_path / "run")["status"] == "Queued"      # signed in: a token in hand
    tokens_before = fake.state()["tokens"]
    n0 = len(fake.requests())
    fake.fail("GET", rf"/jobs/{meta['job']}\?", status=401, code="ExpiredAuthenticationToken",
              message="The access token has expired", headers=EXPIRED)
    assert status(az, tmp_path / "run")["status"] == "Queued"
    gets = [r for r in fake.requests()[n0:] if r["method"] == "GET" and f"/jobs/{meta['job']}?" in r["url"]]
    assert len(gets) == 2 and gets[0]["auth"] != gets[1]["auth"], gets      # the retry carries a new token
    assert fake.state()["tokens"] == tokens_before + 1


def test_a_token_refused_twice_is_not_blamed_on_the_client_secret(fake, tmp_path):
    from distill_studio.engine.azure.jobs import status, submit

    meta = submit(azure_plan(tmp_path), tmp_path / "run", connect(fake), say=lambda s: None)
    n0 = len(fake.requests())
    fake.fail("GET", rf"/jobs/{meta['job']}\?", status=401, code="InvalidAuthenticationToken",
              message="The access token is invalid", headers=EXPIRED, times=10)
    with pytest.raises(AzureError) as info:
        status(connect(fake), tmp_path / "run")
    text = str(info.value)
    assert "did not accept the sign-in's token" in text and "(401)" in text, text
    assert "client secret" not in text
    gets = [r for r in fake.requests()[n0:] if r["method"] == "GET" and f"/jobs/{meta['job']}?" in r["url"]]
    assert len(gets) == 2                                   # once, and once more with a fresh token: no loop


def test_the_sign_in_refused_still_names_the_client_secret(fake, tmp_path):
    fake.fail("POST", r"oauth2/v2.0/token", status=401, code="invalid_client",
              message="AADSTS7000222: the client secret has expired", times=5)
    text, _ = submit_fails(fake, tmp_path)
    assert "refused the sign-in" in text and "client secret" in text, text
    assert not job_puts(fake)


# ---- retry counts as made, a conflict with advice -----------------------------------------------------------------

@pytest.mark.parametrize("status_code", [429, 503])
def test_the_retries_stated_are_the_retries_made(fake, tmp_path, status_code):
    from distill_studio.engine.azure import client

    fake.fake_time()
    fake.fail("PUT", r"/computes/", status=status_code, times=50, headers={"Retry-After": "2"},
              code="TooManyRequests" if status_code == 429 else "ServiceUnavailable")
    text, waited = submit_fails(fake, tmp_path)
    puts = [r for r in fake.requests() if r["method"] == "PUT" and "/computes/" in r["url"]]
    made = len(puts) - 1
    assert made == client.status_retries() == 3
    assert f"after {made} retries" in text, text
    assert waited < USER_WAIT_S and not job_puts(fake)


def test_a_conflict_comes_with_advice(fake, tmp_path):
    fake.fail("PUT", r"/computes/", status=409, code="Conflict",
              message="There is already an operation in progress on compute ds-nc24ads", times=5)
    text, _ = submit_fails(fake, tmp_path)
    assert "conflict (409)" in text and "already an operation in progress" in text, text
    assert "wait a minute and try again" in text and "never sent twice" in text
    assert not job_puts(fake)


# ---- the code uploaded once per content ---------------------------------------------------------------------------

def test_unchanged_code_is_uploaded_once(fake, tmp_path):
    from distill_studio.engine.azure.jobs import CODE_ASSET, submit

    plan = azure_plan(tmp_path)
    said: list[str] = []
    first = submit(plan, tmp_path / "run1", connect(fake), say=said.append)
    uploads = len(fake.blob_puts())
    assert any(r for r in fake.blob_puts() if "distill_studio/engine/train/run.py" in r["url"])
    second = submit(plan, tmp_path / "run2", connect(fake), say=said.append)
    assert len(fake.blob_puts()) == uploads            # nothing uploaded again: neither the code nor the data
    assert any("not uploaded again" in s for s in said), said
    code = [fake.job(m["job"])["properties"]["codeId"] for m in (first, second)]
    assert code[0] == code[1] and f"/codes/{CODE_ASSET}/versions/" in code[0]
    # changed code (another plan resolves to another plan.toml) is uploaded, as its own version
    other = azure_plan(tmp_path, name="demo-on-azure-b")
    third = submit(other, tmp_path / "run3", connect(fake), say=said.append)
    assert len(fake.blob_puts()) > uploads, said
    assert fake.job(third["job"])["properties"]["codeId"] != code[0]
    assert len(job_puts(fake)) == 3


# ---- stderr without colour codes; `logs` only reads ---------------------------------------------------------------

def test_no_colour_escapes_reach_the_terminal(fake, tmp_path, monkeypatch, capfd):
    from distill_studio.engine.cli import main

    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.json").write_text(json.dumps(F.settings_doc()))
    monkeypatch.setenv("DISTILL_AZURE_TRANSPORT", "azure_fake:transport")
    assert main(["azure", "submit", str(azure_plan(tmp_path)), "--run-dir", str(tmp_path / "run")]) == 0
    out, err = capfd.readouterr()
    assert ANSI not in out and ANSI not in err, repr(err[-400:])
    assert "submitted" in err
    # the student downloaded: no progress bars, no colour codes
    meta = json.loads((tmp_path / "run" / "azure.json").read_text())
    student = meta["output"].split("/paths/", 1)[1] + "student"
    fake.put_blob(f"azureml-blobstore/{student}/config.json", b'{"model_type": "llama"}')
    fake.put_blob(f"azureml-blobstore/{student}/model.safetensors", b"weights" * 1000)
    code = main(["azure", "download", str(tmp_path / "run")])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert ANSI not in out and ANSI not in err and "\r" not in err, repr(err[-400:])
    assert (tmp_path / "run" / "student" / "config.json").is_file()
    fake.fail("PUT", r"/jobs/", status=400, code="BadRequest", message="\x1b[31mbad input\x1b[39m", times=5)
    assert main(["azure", "submit", str(azure_plan(tmp_path)), "--run-dir", str(tmp_path / "run-b")]) == 2
    out, err = capfd.readouterr()
    assert ANSI not in err and "bad input" in err, repr(err)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def test_logs_only_reads(fake, tmp_path, monkeypatch, capsys):
    from distill_studio.engine.azure.jobs import submit
    from distill_studio.engine.cli import main

    config = tmp_path / "config"
    config.mkdir()
    (config / "settings.json").write_text(json.dumps(F.settings_doc()))
    monkeypatch.setenv("DISTILL_AZURE_TRANSPORT", "azure_fake:transport")
    run = tmp_path / "run"
    meta = submit(azure_plan(tmp_path), run, connect(fake), say=lambda s: None)
    capsys.readouterr()
    before = snapshot(run)
    assert main(["azure", "logs", str(run)]) == 0                     # queued: no log yet, said so
    assert "no log yet" in capsys.readouterr().err
    fake.set_job(meta["job"], "Running")
    fake.write_log(meta["job"], "step 1/6 loss 2.0\nstep 2/6 loss 1.0\n")
    assert main(["azure", "logs", str(run)]) == 0
    assert "step 2/6 loss 1.0" in capsys.readouterr().out
    # the log unreadable: one message after one try, no retries of the download
    n0 = len(fake.requests())
    fake.fail("GET", r"ExperimentRun/dcid\.", network=True, times=5)
    assert main(["azure", "logs", str(run)]) == 2
    assert "Could not reach Azure while reading the job's log" in capsys.readouterr().err
    assert len([r for r in fake.requests()[n0:] if "ExperimentRun/dcid." in r["url"]]) == 1
    assert snapshot(run) == before                                    # nothing in the run folder was written


def test_a_retry_after_an_outage_keeps_what_the_first_try_recorded(fake, tmp_path):
    """A submission that failed before its job was built is sent again under its name; the pre-flight it recorded
    (and the risks a --force took) stay in azure.json."""
    from distill_studio.engine.azure.jobs import submit

    fake.fake_time()
    fake.fail("GET", r"/workspaces/distill-ws\?", network="proxy", times=50)
    forced = {"preflight": {"ok": False, "forced": True, "risks_taken": ["data: nothing on the datastore"]}}
    with pytest.raises(AzureError):
        submit(azure_plan(tmp_path), tmp_path / "run", connect(fake), say=lambda s: None, record=forced)
    with fake.locked() as s:
        s["faults"] = []
    meta = submit(azure_plan(tmp_path), tmp_path / "run", connect(fake), say=lambda s: None)
    kept = json.loads((tmp_path / "run" / "azure.json").read_text())
    assert kept["preflight"] == forced["preflight"] and kept["job"] == meta["job"]
    assert jobs_in_azure(fake) == [meta["job"]]
