"""The app with Azure ML, end to end against the fake Azure (tests/azure_fake.py): the service principal's secret
entered in Settings, an Azure plan launched after the cost is confirmed, the job submitted and watched by a
detached process (``distill azure submit --watch``), its curves in the monitor, Stop cancelling the job; then every
file the app wrote and every HTTP body it sent is searched for the secret."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox, QPushButton

pytest.importorskip("azure.ai.ml")
import keyring  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
import azure_fake as F  # noqa: E402
from test_azure import SECRET, azure_plan, demo_events  # noqa: E402

from distill_studio.gui.app import create_window  # noqa: E402
from distill_studio.gui.settings.dialog import SettingsDialog  # noqa: E402


@pytest.fixture
def fake_azure(tmp_path, monkeypatch):
    folder = tmp_path / "azure"
    monkeypatch.setenv(F.FAKE_DIR_ENV, str(folder))
    # what the detached watcher process inherits: the fake Azure, and the test keyring where Settings stores
    monkeypatch.setenv("DISTILL_AZURE_TRANSPORT", "azure_fake:transport")
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "azure_fake.FileKeyring")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    before = keyring.get_keyring()
    keyring.set_keyring(F.FileKeyring())
    yield F.FakeAzure(folder)
    keyring.set_keyring(before)


def _points(win, series="loss") -> int:
    return win.runs.monitor.charts["loss"].point_count(series) if series in ("loss",) else 0


def test_launch_watch_and_cancel_an_azure_run(qtbot, screenshot, tmp_path, fake_azure):
    _app, win = create_window([str(azure_plan(tmp_path))])
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: win.planner.analysis is not None, timeout=30_000)

    # not set up yet: Launch says what is missing and where to enter it
    win.launch()
    box = win.findChild(QMessageBox, "error_box")
    assert box is not None and "Settings" in box.informativeText() + box.text() + box.detailedText()
    box.close()

    # the settings flow: workspace, service principal, the secret into the keyring
    dialog = SettingsDialog(win.settings, win)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.keyring_checked, timeout=10_000)
    dialog.subscription_edit.setText(F.SUB)
    dialog.resource_group_edit.setText(F.RG)
    dialog.workspace_edit.setText(F.WS)
    dialog.region_edit.setText(F.REGION)
    dialog.sign_in_combo.setCurrentIndex(dialog.sign_in_combo.findData("service-principal"))
    dialog.tenant_edit.setText(F.TENANT)
    dialog.client_id_edit.setText(F.CLIENT)
    dialog.secret_edit.setText(SECRET)
    dialog.tabs.setCurrentIndex(1)
    screenshot(dialog, "settings_azure_service_principal")
    dialog.accept()
    assert dialog.result() == dialog.DialogCode.Accepted
    assert keyring.get_password("distill-studio", f"azure:{F.TENANT}:{F.CLIENT}") == SECRET

    # Launch: the cost first, nothing submitted until it is confirmed
    confirm = win.launch()
    assert confirm is not None and confirm.objectName() == "azure_confirm"
    text = confirm.informativeText()
    assert "Standard_NC24ads_A100_v4" in text and "$" in text and F.WS in text
    # the pre-flight runs as its own process while the question is shown: it reads, and creates nothing
    assert confirm.property("preflight") == "checking" and "Pre-flight: checking" in text
    assert not confirm.findChild(QPushButton, "azure_submit_button").isEnabled()
    qtbot.waitUntil(lambda: confirm.property("preflight") != "checking", timeout=120_000)
    assert confirm.property("preflight") == "passed", confirm.informativeText()
    assert "Pre-flight passed" in confirm.informativeText()
    screenshot(confirm, "azure_launch_confirm")
    assert not [r for r in fake_azure.requests() if r["method"] == "PUT"]
    confirm.findChild(QPushButton, "azure_submit_button").click()
    record = win.runs.store.records[0]
    assert record.target == "azure" and record.pid > 0
    run = Path(record.run_dir)
    meta = F.wait_for(lambda: json.loads((run / "azure.json").read_text()) if (run / "azure.json").exists()
                      and "submitted" in (run / "azure.json").read_text() else None, timeout=120)
    name = meta["job"]
    monitor = win.runs.monitor
    qtbot.waitUntil(lambda: "Queued" in monitor.log.toPlainText(), timeout=60_000)
    qtbot.wait(500)
    assert monitor.log.toPlainText().count(f"job {name}: Queued") == 1
    qtbot.waitUntil(lambda: "Azure ML: Queued" in monitor.status_label.text(), timeout=10_000)
    screenshot(win, "azure_run_queued")

    # the node trains: its MLflow metrics become the monitor's curves
    fake_azure.set_job(name, "Running")
    import time

    events = demo_events(steps=30, end=None, t0=time.time() - 40)
    fake_azure.log_events(name, events[:40])
    fake_azure.write_log(name, "step 10/30 loss 0.2000 kd 0.1500 lr 1.00e-03 4,096 tok/s\n")
    qtbot.waitUntil(lambda: _points(win) >= 10, timeout=60_000)
    assert monitor.snapshot.status == "running" and monitor.snapshot.alive
    assert monitor.progress.value() > 0
    qtbot.waitUntil(lambda: "step 10/30" in monitor.log.toPlainText(), timeout=30_000)
    qtbot.wait(1500)     # the charts redraw on their own timer
    screenshot(win, "azure_run_running")

    # Stop: the watcher cancels the job; the engine checkpoints, and the end is recorded
    assert monitor.stop_button.isEnabled()
    monitor.stop_button.click()
    F.wait_for(lambda: fake_azure.job(name)["properties"]["status"] == "CancelRequested", timeout=60)
    fake_azure.log_events(name, [{"v": 1, "time": events[39]["time"] + 1, "type": "run_finished",
                                  "status": "cancelled", "step": 13, "message": "stopped by SIGTERM at step 13"}])
    fake_azure.set_job(name, "Canceled")
    qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.status == "cancelled"
                    and not monitor.snapshot.alive, timeout=60_000)
    assert "distill azure resume" in monitor.snapshot.message
    assert monitor.resume_button.isEnabled()
    qtbot.wait(1000)
    screenshot(win, "azure_run_cancelled")
    win.close()

    # the secret is in the keyring and in the token request only: not in the settings, the runs list, the run
    # folder, its logs, nor an exported job file
    from distill_studio.engine.cli import main

    exported = tmp_path / "export"
    assert main(["azure", "export", str(azure_plan(tmp_path)), "--out", str(exported / "job.yaml")]) == 0
    leaks = []
    for root in (Path(os.environ["DISTILL_STUDIO_DATA_DIR"]), Path(os.environ["DISTILL_STUDIO_CONFIG_DIR"]), run,
                 exported):
        for path in root.rglob("*"):
            if path.is_file() and SECRET.encode() in path.read_bytes():
                leaks.append(str(path))
    assert leaks == []
    sent = [r for r in fake_azure.requests() if SECRET in r["body"] or SECRET in r["url"]]
    assert sent and all(r["url"].endswith("/oauth2/v2.0/token") for r in sent)
    assert all(SECRET not in r["auth"] for r in fake_azure.requests())
    assert SECRET not in (run / "logs" / "console.log").read_text()


def test_check_capacity_from_the_planner(qtbot, screenshot, tmp_path, fake_azure, monkeypatch):
    """Check capacity signs in (on a worker), reads the region's sizes and quota, and plans again: sizes the
    subscription cannot get are never recommended, and the table says why."""
    from test_azure_capacity import aml_usages, sku_pages, vm_usages

    config = tmp_path / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "settings.json").write_text(json.dumps(F.settings_doc()))
    keyring.set_password("distill-studio", f"azure:{F.TENANT}:{F.CLIENT}", SECRET)
    page1, page2 = sku_pages()
    fake_azure.serve("GET", r"/providers/Microsoft\.Compute/skus\?.*skiptoken=page2", page2)
    fake_azure.serve("GET", r"/providers/Microsoft\.Compute/skus\?(?!.*skiptoken)", page1)
    fake_azure.serve("GET", r"/providers/Microsoft\.Compute/locations/eastus/usages\?", vm_usages())
    fake_azure.serve("GET", r"/providers/Microsoft\.MachineLearningServices/locations/eastus/usages\?", aml_usages())
    plan = Path(__file__).resolve().parents[2] / "resources" / "plans" / "gemma3-27b-to-4b-3h.toml"
    _app, win = create_window([str(plan)])
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: win.planner.analysis is not None, timeout=30_000)
    view = win.planner
    assert view.analysis.capacity is None
    assert any("not checked" in n for n in view.analysis.notes)
    before = view.analysis.decision.recommended
    view.capacity_button.click()
    qtbot.waitUntil(lambda: view.capacity_button.text().startswith("Capacity:"), timeout=30_000)
    qtbot.waitUntil(lambda: view.analysis is not None and view.analysis.capacity is not None, timeout=30_000)
    a = view.analysis
    blocked = [i for i in range(len(a.sweep)) if a.planned[i] and "not offered in" in a.reason(i)]
    assert blocked, "no option was marked as not offered"
    assert a.decision.recommended not in blocked
    assert any("capacity and quota checked" in n for n in a.notes)
    assert before is not None
    # drawn hollow, in a legend entry of their own, not as "outside the budget"
    chart = view.chart
    assert chart.unavailable.data.size > 0 and chart._unavailable_in_legend
    drawn_blocked = set(int(d) for d in chart.unavailable.data["data"])
    assert drawn_blocked and not drawn_blocked & set(int(d) for d in chart.grey.data["data"])
    extra = drawn_blocked - set(blocked) - {i for i in range(len(a.sweep)) if " quota for " in a.reason(i)}
    assert not extra, [a.reason(i) for i in sorted(extra)[:3]]
    qtbot.wait(500)
    screenshot(win, "planner_capacity_checked")
    win.close()


def test_one_launch_runs_a_split_plans_two_jobs(qtbot, screenshot, tmp_path, fake_azure):
    """A split plan (the teacher's pass on ND H100, training on NC A100): the planner draws split options as
    diamonds, Launch says it is two jobs on two sizes, and one click submits the teacher's job, then the training
    job when it completed, in one run the monitor follows to the end."""
    import time

    from test_azure import split_plan

    config = tmp_path / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "settings.json").write_text(json.dumps(F.settings_doc()))
    keyring.set_password("distill-studio", f"azure:{F.TENANT}:{F.CLIENT}", SECRET)
    _app, win = create_window([str(split_plan(tmp_path))])
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: win.planner.analysis is not None, timeout=30_000)
    view = win.planner
    a = view.analysis
    r = a.sweep.row(a.decision.recommended)
    assert r["split"]["teacher_pass"]["sku"] == "Standard_ND96isr_H100_v5"
    assert view.chart._split_in_legend
    symbols = set(view.chart.ok.data["symbol"]) | set(view.chart.grey.data["symbol"])
    assert "d" in symbols
    assert "teacher pass 1 × ND96isr_H100_v5, then 1 × NC24ads_A100_v4" in view.describe(a.decision.recommended)
    row = view.model.row_of(a.decision.recommended)
    from distill_studio.gui.planner.table import MACHINE_COL

    assert view.model.data(view.model.index(row, MACHINE_COL)) == "1 × ND96isr_H100_v5 → 1 × NC24ads_A100_v4"
    qtbot.wait(300)
    screenshot(win, "planner_split_plan")

    confirm = win.launch()
    assert confirm is not None and confirm.objectName() == "azure_confirm"
    text = confirm.informativeText()
    assert "Two jobs" in text and "Standard_ND96isr_H100_v5" in text and "Standard_NC24ads_A100_v4" in text
    screenshot(confirm, "azure_launch_confirm_split")
    submit = confirm.findChild(QPushButton, "azure_submit_button")
    assert not submit.isEnabled()             # nothing can be submitted while the pre-flight is still checking
    qtbot.waitUntil(lambda: confirm.property("preflight") != "checking", timeout=120_000)
    assert confirm.property("preflight") == "passed", confirm.informativeText()
    submit.click()
    run = Path(win.runs.store.records[0].run_dir)
    meta = F.wait_for(lambda: json.loads((run / "azure.json").read_text()) if (run / "azure.json").exists()
                      and "submitted" in (run / "azure.json").read_text() else None, timeout=120)
    first = meta["job"]
    assert meta["stage"] == "teacher"
    fake_azure.set_job(first, "Running")
    t0 = time.time() - 60
    fake_azure.log_events(first, [
        {"v": 1, "time": t0, "type": "run_started", "total_steps": 0, "total_tokens": 0, "stage": "teacher",
         "teacher_mode": "offline-topk"},
        {"v": 1, "time": t0 + 20, "type": "run_finished", "status": "succeeded", "step": 0,
         "message": "teacher pass kept in /mnt/x for the student stage"}])
    fake_azure.set_job(first, "Completed")
    second = f"{first}-student"
    F.wait_for(lambda: second in fake_azure.state()["jobs"], timeout=120)
    monitor = win.runs.monitor
    qtbot.waitUntil(lambda: "submitting the training job" in monitor.log.toPlainText(), timeout=60_000)
    assert "teacher's pass finished" in (run / "events.jsonl").read_text()
    qtbot.wait(1500)
    assert monitor.snapshot.status != "succeeded" and monitor.snapshot.alive
    fake_azure.set_job(second, "Running")
    fake_azure.log_events(second, demo_events(steps=6, t0=t0 + 30))
    fake_azure.set_job(second, "Completed")
    qtbot.waitUntil(lambda: monitor.snapshot is not None and monitor.snapshot.status == "succeeded"
                    and not monitor.snapshot.alive, timeout=120_000)
    qtbot.wait(1000)
    screenshot(win, "azure_split_run_finished")
    win.close()


def test_launch_shows_a_failing_preflight_and_submits_nothing(qtbot, screenshot, tmp_path, fake_azure):
    """A bundled Gemma plan in a workspace where nothing is ready: the Launch confirmation names each problem
    (permission, data, the gated model's token), says what to do, and Submit is disabled; nothing is created."""
    from test_azure_preflight import DATA_SCIENTIST

    config = tmp_path / "config"
    config.mkdir(parents=True, exist_ok=True)
    doc = F.settings_doc()
    doc["azure"]["hf_token_secret"] = "hf-token"
    (config / "settings.json").write_text(json.dumps(doc))
    keyring.set_password("distill-studio", f"azure:{F.TENANT}:{F.CLIENT}", SECRET)
    fake_azure.set_permissions(DATA_SCIENTIST["actions"], DATA_SCIENTIST["notActions"])
    fake_azure.set_secret("hf-token", "hf_not_a_real_token")
    plan = TESTS.parent / "resources" / "plans" / "gemma3-27b-to-4b-3h.toml"
    _app, win = create_window([str(plan)])
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: win.planner.analysis is not None, timeout=60_000)
    confirm = win.launch()
    assert confirm is not None and confirm.objectName() == "azure_confirm"
    qtbot.waitUntil(lambda: confirm.property("preflight") != "checking", timeout=120_000)
    assert confirm.property("preflight") == "failed", confirm.informativeText()
    text, details = confirm.informativeText(), confirm.detailedText()
    assert "Pre-flight found 3 problems" in text
    assert "✗ permission:" in text and "✗ data:" in text and "✗ token:" in text
    assert "AzureML Compute Operator" in details and "--create-cluster" in details
    assert "upload the data there" in details
    assert not confirm.findChild(QPushButton, "azure_submit_button").isEnabled()
    qtbot.wait(200)
    screenshot(confirm, "azure_launch_confirm_preflight_failed")
    assert not [r for r in fake_azure.requests() if r["method"] == "PUT"]
    confirm.close()
    win.close()


def test_launch_offers_a_smoke_test_above_the_threshold(qtbot, screenshot, tmp_path, fake_azure):
    """Settings › Azure holds the threshold; Launch of an Azure plan estimated above it (P80) offers a smoke test
    with its cost range, below it does not; the offer starts `distill azure smoke PLAN --yes --json` as its own
    process, and its results are shown when the job ends."""
    from distill_studio.engine.azure.smoke import plan_cost_at

    config = tmp_path / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "settings.json").write_text(json.dumps(F.settings_doc()))
    keyring.set_password("distill-studio", f"azure:{F.TENANT}:{F.CLIENT}", SECRET)
    plan = azure_plan(tmp_path)
    p80 = plan_cost_at(plan)
    assert p80 is not None and p80 > 0
    _app, win = create_window([str(plan)])
    qtbot.addWidget(win)
    qtbot.waitUntil(lambda: win.planner.analysis is not None, timeout=30_000)
    assert win.settings.azure.smoke_test_above_usd == 200.0           # the default

    # the threshold in Settings › Azure, saved
    dialog = SettingsDialog(win.settings, win)
    qtbot.addWidget(dialog)
    assert dialog.smoke_threshold_spin.value() == 200.0
    dialog.smoke_threshold_spin.setValue(round(p80) + 1)
    dialog.tabs.setCurrentIndex(1)
    screenshot(dialog, "settings_azure_smoke_threshold")
    dialog.accept()
    assert win.settings.azure.smoke_test_above_usd == round(p80) + 1
    assert json.loads((config / "settings.json").read_text())["azure"]["smoke_test_above_usd"] == round(p80) + 1

    # below the threshold: no offer
    confirm = win.launch()
    assert confirm.findChild(QPushButton, "azure_smoke_button") is None and confirm.property("smoke_offer") == ""
    qtbot.waitUntil(lambda: confirm.property("preflight") != "checking", timeout=120_000)
    confirm.close()

    # above it: the offer, with the smoke job's cost as a range
    win.settings.azure = win.settings.azure.model_copy(update={"smoke_test_above_usd": max(0.0, p80 - 0.01)})
    confirm = win.launch()
    smoke = confirm.findChild(QPushButton, "azure_smoke_button")
    assert smoke is not None and smoke.isEnabled()
    assert smoke.text().startswith("Run a smoke test first (≈ $") and "–" in smoke.text() and "~10 min" in smoke.text()
    assert "P80" in smoke.toolTip() and "Standard_NC24ads_A100_v4" in smoke.toolTip()
    qtbot.waitUntil(lambda: confirm.property("preflight") != "checking", timeout=120_000)
    qtbot.wait(200)
    screenshot(confirm, "azure_launch_confirm_smoke_offer")
    assert not [r for r in fake_azure.requests() if r["method"] == "PUT"]

    # the offer taken: its own process submits the smoke job (confirmed by the click); Azure runs it
    smoke.click()
    name = F.wait_for(lambda: next(iter(fake_azure.state()["jobs"]), None), timeout=120)
    job = fake_azure.job(name)["properties"]
    assert "smoke_node" in job["command"] and job["tags"].get("distill-smoke") == "1"
    assert not win.runs.store.records                      # no training run was launched
    output = job["outputs"]["smoke"]["uri"].split("/paths/", 1)[1].rstrip("/")
    results = {"version": 1, "sku": "Standard_NC24ads_A100_v4", "nodes": 1, "gpus_per_node": 1, "world_size": 1,
               "backend": "nccl", "ok": False, "collectives": [], "storage": {"read_gb_per_s": 0.9},
               "checks": [{"name": "cuda", "ok": True, "text": "1 GPU(s) (NVIDIA A100 80GB PCIe), 1 expected"},
                          {"name": "collectives", "ok": None, "text": "one process: there is no collective to measure"},
                          {"name": "data_read", "ok": True, "text": "900 MB/s"},
                          {"name": "output_write", "ok": False, "text": "writing failed: No space left on device"}]}
    fake_azure.put_blob(f"azureml-blobstore/{output}/smoke.json", json.dumps(results).encode())
    fake_azure.set_job(name, "Completed")
    box = None

    def result_box():
        nonlocal box
        box = win.findChild(QMessageBox, "smoke_result")
        return box is not None and box.isVisible()

    qtbot.waitUntil(result_box, timeout=120_000)
    assert "FAILED" in box.text()
    assert "FAIL output_write: writing failed: No space left on device" in box.informativeText()
    assert "PASS cuda" in box.informativeText()
    qtbot.wait(200)
    screenshot(box, "azure_smoke_result")
    box.close()
    win.close()
