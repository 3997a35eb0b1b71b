"""Prices: bundled table, cache, and the live refresh against a local fake of the Azure Retail Prices API."""
from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from distill_studio.engine.catalog import prices as P
from distill_studio.engine.catalog.hardware import load_skus
from distill_studio.engine.errors import PriceError

PAGES = Path(__file__).parent / "data" / "prices_pages"
API_PATH = "/api/retail/prices"
BUNDLED_DATE = "2026-11-09"


# --------------------------------------------------------------------------------------------------------
# A fake Retail Prices API on 127.0.0.1


class FakeApi:
    """Serves page1.json for the first request and page2.json for the NextPageLink (which has $skip)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.mode = "ok"  # "ok" | "500" | "garbage" | "empty" | "loop"
        self.server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return self.base + API_PATH

    def body_for(self, path: str) -> tuple[int, bytes]:
        if self.mode == "500":
            return 500, b'{"Error": "boom"}'
        if self.mode == "garbage":
            return 200, b"<html>not json</html>"
        if self.mode == "empty":
            return 200, json.dumps({"Items": [], "NextPageLink": None, "Count": 0}).encode()
        if self.mode == "loop":
            return 200, json.dumps({"Items": [], "NextPageLink": self.url + "?$skip=1", "Count": 0}).encode()
        page = "page2.json" if "%24skip=" in path or "$skip=" in path else "page1.json"
        text = (PAGES / page).read_text(encoding="utf-8").replace("{BASE}", self.base)
        return 200, text.encode()


@pytest.fixture
def api():
    fake = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            fake.requests.append(self.path)
            if not self.path.startswith(API_PATH):
                self.send_error(404)
                return
            status, body = fake.body_for(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.server = server
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(d))
    return d


def _filter_of(path: str) -> str:
    query = urllib.parse.urlsplit(path).query
    return urllib.parse.parse_qs(query)["$filter"][0]


# --------------------------------------------------------------------------------------------------------
# Live refresh


def test_refresh_follows_next_page_link_and_maps_rows(api, data_dir):
    table = P.refresh_prices("eastus", api_url=api.url, timeout_s=5)

    assert len(api.requests) == 2, api.requests
    assert "skip=5" in api.requests[1]
    assert table.origin == "live"
    assert table.region == "eastus"
    today = dt.date.today().isoformat()
    assert table.fetched_on == today

    h100 = table.lookup("Standard_ND96isr_H100_v5", "dedicated")
    assert h100 is not None and h100.usd_per_hour == pytest.approx(98.32)
    # page 2 was read too
    nc = table.lookup("Standard_NC24ads_A100_v4", "dedicated")
    assert nc is not None and nc.usd_per_hour == pytest.approx(3.673)
    # Windows rows never make it in
    values = {p.usd_per_hour for p in table.prices}
    assert 102.736 not in values and 4.409 not in values
    assert all("windows" not in p.source.lower() for p in table.prices)
    # Spot is preferred over Low Priority, and the row says which meter it is
    spot = table.lookup("Standard_ND96isr_H100_v5", "low-priority")
    assert spot is not None and spot.usd_per_hour == pytest.approx(18.169536)
    assert "Spot" in spot.source
    # a SKU with only a Low Priority meter still gets a low-priority price
    lp = table.lookup("Standard_NC24ads_A100_v4", "low-priority")
    assert lp is not None and lp.usd_per_hour == pytest.approx(0.7346)
    assert "Low Priority" in lp.source
    # sizes not in the catalog are dropped
    assert {p.sku for p in table.prices} <= set(load_skus())
    assert len(table.prices) == 4
    assert all(p.source_date == today and p.region == "eastus" for p in table.prices)


def test_refresh_writes_the_cache_and_load_prices_reads_it(api, data_dir):
    table = P.refresh_prices("eastus", api_url=api.url, timeout_s=5)
    path = data_dir / "prices" / "eastus.json"
    assert path.is_file()
    doc = json.loads(path.read_text())
    assert doc["fetched_on"] == table.fetched_on == dt.date.today().isoformat()
    assert doc["region"] == "eastus"
    assert len(doc["prices"]) == 4
    # written atomically: no temp file left behind
    assert [p.name for p in path.parent.iterdir()] == ["eastus.json"]

    loaded = P.load_prices("eastus")
    assert loaded.origin == "cache"
    assert loaded.fetched_on == table.fetched_on
    assert loaded.prices == table.prices
    assert loaded.lookup("ND96isr_H100_v5", "dedicated").usd_per_hour == pytest.approx(98.32)


def test_filter_sent_to_the_api_names_region_and_skus(api):
    P.refresh_prices("EastUS", api_url=api.url, timeout_s=5)
    first = api.requests[0]
    assert first.startswith(API_PATH + "?")
    flt = _filter_of(first)
    assert "armRegionName eq 'eastus'" in flt
    assert "serviceName eq 'Virtual Machines'" in flt
    assert "priceType eq 'Consumption'" in flt
    for sku in load_skus():
        assert f"armSkuName eq '{sku}'" in flt
    # properly URL-encoded: no raw spaces or quotes in the request line
    assert " " not in first and "'" not in first


def test_http_500_is_a_price_error_and_bundled_prices_stay(api, data_dir):
    api.mode = "500"
    with pytest.raises(PriceError) as err:
        P.refresh_prices("eastus", api_url=api.url, timeout_s=5)
    assert "500" in str(err.value)
    assert "bundled prices remain in use" in str(err.value)
    assert not (data_dir / "prices" / "eastus.json").exists()

    table = P.load_prices("eastus")
    assert table.origin == "bundled"
    assert table.fetched_on == BUNDLED_DATE
    assert BUNDLED_DATE in table.note
    assert "distill prices refresh --region eastus" in table.note
    assert table.prices


def test_unreachable_server_is_a_price_error(data_dir):
    with socket.socket() as s:  # find a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PriceError) as err:
        P.refresh_prices("eastus", api_url=f"http://127.0.0.1:{port}{API_PATH}", timeout_s=2)
    assert "cannot reach" in str(err.value)
    assert "bundled prices remain in use" in str(err.value)
    table = P.load_prices("eastus")
    assert table.origin == "bundled" and BUNDLED_DATE in table.note


def test_bad_json_is_a_price_error(api):
    api.mode = "garbage"
    with pytest.raises(PriceError, match="not JSON"):
        P.refresh_prices("eastus", api_url=api.url, timeout_s=5)


def test_no_matching_rows_is_a_price_error_and_writes_no_cache(api, data_dir):
    api.mode = "empty"
    with pytest.raises(PriceError, match="no Linux prices"):
        P.refresh_prices("eastus", api_url=api.url, timeout_s=5)
    assert not (data_dir / "prices" / "eastus.json").exists()


def test_paging_is_capped(api, monkeypatch):
    api.mode = "loop"
    monkeypatch.setattr(P, "MAX_PAGES", 3)
    with pytest.raises(PriceError, match="3 pages"):
        P.refresh_prices("eastus", api_url=api.url, timeout_s=5)
    assert len(api.requests) == 3


# --------------------------------------------------------------------------------------------------------
# Offline: bundled and cache


def test_bundled_prices_for_eastus():
    table = P.load_prices("eastus")
    assert table.origin == "bundled"
    assert table.fetched_on == BUNDLED_DATE
    assert f"bundled prices from {BUNDLED_DATE}" in table.note
    assert "distill prices refresh --region eastus" in table.note
    price = table.lookup("Standard_NC24ads_A100_v4")
    assert price is not None and price.usd_per_hour == pytest.approx(3.673)
    # no Spot price could be sourced: unknown, not guessed
    assert table.lookup("Standard_NC24ads_A100_v4", "low-priority") is None


def test_every_bundled_price_is_sourced_and_valid():
    skus = load_skus()
    rows = P._bundled_rows()
    assert rows
    seen = set()
    for p in rows:
        assert p.sku in skus, p.sku
        assert p.priority in P.PRIORITIES
        assert p.usd_per_hour > 0
        assert "http" in p.source  # a URL to check it against
        dt.date.fromisoformat(p.source_date)
        key = (p.sku, p.region, p.priority)
        assert key not in seen, key
        seen.add(key)


def test_region_without_bundled_prices_is_unknown():
    table = P.load_prices("brazilsouth")
    assert table.prices == []
    assert table.fetched_on == ""
    assert "unknown" in table.note
    assert "distill prices refresh --region brazilsouth" in table.note
    assert table.lookup("Standard_ND96isr_H100_v5") is None


def test_corrupt_cache_is_ignored_with_a_note(data_dir):
    path = data_dir / "prices" / "eastus.json"
    path.parent.mkdir(parents=True)
    path.write_text("{ this is not json")
    table = P.load_prices("eastus")
    assert table.origin == "bundled"
    assert "ignored" in table.note and str(path) in table.note
    assert BUNDLED_DATE in table.note


def test_cache_for_another_region_or_format_is_ignored(data_dir):
    path = data_dir / "prices" / "eastus.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"version": 1, "region": "westus", "fetched_on": "2026-11-01", "prices": []}))
    assert P.load_prices("eastus").origin == "bundled"
    path.write_text(json.dumps([1, 2, 3]))
    assert P.load_prices("eastus").origin == "bundled"


def test_data_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_STUDIO_DATA_DIR", str(tmp_path / "x"))
    assert P.data_dir() == tmp_path / "x"
    assert P.cache_path("WestEurope") == tmp_path / "x" / "prices" / "westeurope.json"
    monkeypatch.delenv("DISTILL_STUDIO_DATA_DIR")
    assert "distill-studio" in str(P.data_dir())


@pytest.mark.parametrize("bad", ["", "../etc", "east us 2!", "eastus/../../x"])
def test_bad_region_names_are_refused(bad):
    with pytest.raises(PriceError):
        P.load_prices(bad)


def test_lookup_rejects_an_unknown_priority():
    with pytest.raises(PriceError, match="priority"):
        P.load_prices("eastus").lookup("Standard_NC24ads_A100_v4", "spot")
