"""Azure VM prices: bundled, cached, or fetched live from the public Azure Retail Prices API.

Where prices come from, in order:

1. **cache** -- ``data_dir()/prices/<region>.json``, written by :func:`refresh_prices`
   (``distill prices refresh --region R``).
2. **bundled** -- ``prices.toml`` in the package: dated, sourced figures. A price nobody could source is
   not there, and the app shows it as unknown.
3. nothing -- an empty table whose note says prices are unknown for the region and how to refresh.

:func:`load_prices` never touches the network and never fails because of a bad cache file (it notes it
and falls back). :func:`refresh_prices` is the only function that goes online; any failure there is a
:class:`~distill_studio.engine.errors.PriceError` that says what failed and that the bundled prices
remain in use.

All prices are pay-as-you-go, Linux, USD per hour for the whole VM. ``priority`` is ``"dedicated"``
(on-demand) or ``"low-priority"`` (Azure Spot, or the older Low Priority meters when there is no Spot).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tomllib
import urllib.parse
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from ..errors import PriceError
from .hardware import load_skus
from .types import Price

RETAIL_PRICES_URL = "https://prices.azure.com/api/retail/prices"
DATA_DIR_ENV = "DISTILL_STUDIO_DATA_DIR"
PRIORITIES = ("dedicated", "low-priority")
MAX_PAGES = 50  # the SKU filter returns a handful of pages at most; this only stops a runaway loop

_DATA_PACKAGE = "distill_studio.engine.catalog.data"
_PRICES_FILE = "prices.toml"
_CACHE_VERSION = 1
_REGION_RE = re.compile(r"^[a-z0-9]+$")


# --------------------------------------------------------------------------------------------------------
# The table


@dataclass
class PriceTable:
    """Prices for one region, with where they came from.

    ``fetched_on`` is the ISO date the prices are from ("" when there are none); ``origin`` is
    ``"bundled"``, ``"cache"`` or ``"live"``; ``note`` is a sentence for the user (empty when nothing
    needs saying).
    """

    region: str
    prices: list[Price] = field(default_factory=list)
    fetched_on: str = ""
    origin: str = "bundled"
    note: str = ""

    def lookup(self, sku: str, priority: str = "dedicated") -> Price | None:
        """The price of ``sku`` at ``priority`` in this region, or None when it is unknown.

        ``sku`` is matched case-insensitively, with or without the ``Standard_`` prefix.
        """
        if priority not in PRIORITIES:
            raise PriceError(f"priority must be one of {', '.join(PRIORITIES)}; got {priority!r}")
        key = _sku_key(sku)
        for price in self.prices:
            if price.priority == priority and _sku_key(price.sku) == key:
                return price
        return None


def _sku_key(sku: str) -> str:
    key = sku.strip().lower()
    return key if key.startswith("standard_") else "standard_" + key


def _normalize_region(region: str) -> str:
    """ARM region names are lower-case letters and digits ("eastus", "westeurope")."""
    if not isinstance(region, str):
        raise PriceError(f"region must be an Azure region name such as 'eastus'; got {region!r}")
    key = region.strip().lower().replace(" ", "")
    if not _REGION_RE.match(key):
        raise PriceError(
            f"region {region!r} is not an Azure region name; use the ARM name, e.g. 'eastus' or 'westeurope'"
        )
    return key


def _refresh_hint(region: str) -> str:
    return f"run `distill prices refresh --region {region}` to fetch current prices"


# --------------------------------------------------------------------------------------------------------
# Where the cache lives


def data_dir() -> Path:
    """The per-user data folder (``platformdirs.user_data_dir("distill-studio")``).

    The environment variable ``DISTILL_STUDIO_DATA_DIR`` overrides it (tests use this).
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs  # imported here: only needed when no override is set

    return Path(platformdirs.user_data_dir("distill-studio", appauthor=False))


def cache_path(region: str) -> Path:
    """``data_dir()/prices/<region>.json``."""
    return data_dir() / "prices" / f"{_normalize_region(region)}.json"


# --------------------------------------------------------------------------------------------------------
# Bundled prices


@lru_cache(maxsize=1)
def _bundled_rows() -> tuple[Price, ...]:
    raw = resources.files(_DATA_PACKAGE).joinpath(_PRICES_FILE).read_bytes()
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PriceError(f"bundled {_PRICES_FILE} is not valid TOML: {exc}") from exc
    rows = []
    for i, row in enumerate(doc.get("price", [])):
        try:
            price = _price_from_dict(row)
        except (KeyError, TypeError, ValueError) as exc:
            raise PriceError(f"bundled {_PRICES_FILE}: [[price]] #{i + 1} is invalid: {exc}") from exc
        if not price.source or not price.source_date:
            raise PriceError(f"bundled {_PRICES_FILE}: {price.sku} ({price.region}) has no source/source_date")
        rows.append(price)
    return tuple(rows)


def bundled_prices(region: str) -> PriceTable:
    """The prices shipped with the package for ``region`` (origin ``"bundled"``).

    The table's date is the oldest ``source_date`` of its rows. A region without bundled rows gives an
    empty table whose note says its prices are unknown.
    """
    region = _normalize_region(region)
    rows = [p for p in _bundled_rows() if p.region == region]
    if not rows:
        return PriceTable(
            region=region,
            prices=[],
            fetched_on="",
            origin="bundled",
            note=f"prices are unknown for region {region} (none bundled); {_refresh_hint(region)}",
        )
    date = min(p.source_date for p in rows)
    return PriceTable(
        region=region,
        prices=rows,
        fetched_on=date,
        origin="bundled",
        note=f"using the bundled prices from {date}; {_refresh_hint(region)}",
    )


# --------------------------------------------------------------------------------------------------------
# Cache


def _price_from_dict(row: dict[str, Any]) -> Price:
    priority = str(row["priority"])
    if priority not in PRIORITIES:
        raise ValueError(f"priority {priority!r} is not one of {PRIORITIES}")
    usd = float(row["usd_per_hour"])
    if not usd > 0:
        raise ValueError(f"usd_per_hour must be > 0, got {usd!r}")
    return Price(
        sku=str(row["sku"]),
        region=str(row["region"]).lower(),
        priority=priority,
        usd_per_hour=usd,
        source=str(row.get("source", "")),
        source_date=str(row.get("source_date", "")),
    )


def _read_cache(region: str) -> PriceTable:
    """Read the cache file; raises ValueError/OSError/KeyError/TypeError when it is unusable."""
    path = cache_path(region)
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("version") != _CACHE_VERSION:
        raise ValueError("unrecognised format")
    if doc.get("region") != region:
        raise ValueError(f"it is for region {doc.get('region')!r}")
    fetched_on = str(doc["fetched_on"])
    _dt.date.fromisoformat(fetched_on)
    prices = [_price_from_dict(r) for r in doc["prices"]]
    if not prices:
        raise ValueError("it holds no prices")
    return PriceTable(
        region=region,
        prices=prices,
        fetched_on=fetched_on,
        origin="cache",
        note=f"prices fetched from the Azure Retail Prices API on {fetched_on}",
    )


def _write_cache(table: PriceTable, source_url: str) -> Path:
    """Write the table to its cache file atomically (temp file in the same folder, then os.replace)."""
    path = cache_path(table.region)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "version": _CACHE_VERSION,
        "region": table.region,
        "fetched_on": table.fetched_on,
        "fetched_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source_url,
        "prices": [asdict(p) for p in table.prices],
    }
    from ..files import write_json_atomic

    write_json_atomic(path, doc)
    return path


def load_prices(region: str) -> PriceTable:
    """Prices for ``region`` without going online: the cache if there is one, else the bundled table.

    A cache file that cannot be read is ignored (the note says so), never an error.
    """
    region = _normalize_region(region)
    path = cache_path(region)
    if path.exists():
        try:
            return _read_cache(region)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            table = bundled_prices(region)
            table.note = f"ignored unreadable price cache {path} ({exc}); {table.note}"
            return table
    return bundled_prices(region)


# --------------------------------------------------------------------------------------------------------
# Live refresh


def _odata_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def build_filter(region: str, skus: Iterable[str]) -> str:
    """The OData ``$filter`` for Linux/Windows consumption meters of ``skus`` in ``region``."""
    sku_clause = " or ".join(f"armSkuName eq {_odata_quote(s)}" for s in skus)
    return (
        "serviceName eq 'Virtual Machines'"
        f" and armRegionName eq {_odata_quote(region)}"
        " and priceType eq 'Consumption'"
        f" and ({sku_clause})"
    )


def _first_url(api_url: str, odata_filter: str) -> str:
    query = "currencyCode=" + urllib.parse.quote("'USD'", safe="") + "&$filter=" + urllib.parse.quote(
        odata_filter, safe=""
    )
    sep = "&" if urllib.parse.urlsplit(api_url).query else "?"
    return f"{api_url}{sep}{query}"


def _short(url: str) -> str:
    """The URL without its (long) query string, for messages."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _get_json(url: str, timeout_s: float) -> dict[str, Any]:
    # Imported here: urllib.request pulls in http.client, ssl and email (~30 ms), only needed online.
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "distill-studio"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 (https API URL)
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise PriceError(
            f"the Azure Retail Prices API answered HTTP {exc.code} ({exc.reason}) for {_short(url)}; "
            "bundled prices remain in use"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PriceError(
            f"cannot reach the Azure Retail Prices API ({reason}); bundled prices remain in use"
        ) from exc
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PriceError(
            f"the Azure Retail Prices API returned something that is not JSON ({exc}); bundled prices remain in use"
        ) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("Items"), list):
        raise PriceError(
            "the Azure Retail Prices API returned JSON without an 'Items' list; bundled prices remain in use"
        )
    return doc


def _priority_of(item: dict[str, Any]) -> tuple[str, str]:
    """(priority, meter kind) from meterName/skuName: Spot and Low Priority are "low-priority"."""
    names = f"{item.get('meterName', '')} {item.get('skuName', '')}".lower()
    if "spot" in names:
        return "low-priority", "Spot"
    if "low priority" in names:
        return "low-priority", "Low Priority"
    return "dedicated", "on-demand"


def _usable(item: dict[str, Any], region: str, wanted: dict[str, str]) -> bool:
    return (
        str(item.get("armSkuName", "")).lower() in wanted
        and str(item.get("armRegionName", "")).lower() == region
        and "windows" not in str(item.get("productName", "")).lower()
        and str(item.get("unitOfMeasure", "")).strip().lower() == "1 hour"
        and str(item.get("type", "Consumption")) == "Consumption"
        and str(item.get("currencyCode", "USD")).upper() == "USD"
    )


def _rank(item: dict[str, Any], kind: str) -> tuple:
    """Higher is preferred among rows for the same (sku, priority)."""
    return (
        kind == "Spot",  # Spot over Low Priority
        bool(item.get("isPrimaryMeterRegion", True)),
        str(item.get("effectiveStartDate", "")),  # the newest price
    )


def prices_from_items(items: Iterable[dict[str, Any]], region: str, skus: Iterable[str], today: str) -> list[Price]:
    """Turn Retail Prices API items into Prices: Linux, hourly, USD, our SKUs; one row per SKU and priority."""
    wanted = {s.lower(): s for s in skus}
    best: dict[tuple[str, str], tuple[tuple, Price]] = {}
    for item in items:
        if not isinstance(item, dict) or not _usable(item, region, wanted):
            continue
        try:
            usd = float(item.get("retailPrice", item.get("unitPrice")))
        except (TypeError, ValueError):
            continue
        if not usd > 0:
            continue
        sku = wanted[str(item["armSkuName"]).lower()]
        priority, kind = _priority_of(item)
        price = Price(
            sku=sku,
            region=region,
            priority=priority,
            usd_per_hour=usd,
            source=(
                f"Azure Retail Prices API, {kind} meter {item.get('meterName', '')!r} "
                f"({item.get('productName', '')}), effective {str(item.get('effectiveStartDate', ''))[:10]}"
            ),
            source_date=today,
        )
        rank = _rank(item, kind)
        key = (sku, priority)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, price)
    return [best[k][1] for k in sorted(best)]


def refresh_prices(region: str, api_url: str = RETAIL_PRICES_URL, timeout_s: float = 20) -> PriceTable:
    """Fetch current prices for our SKUs in ``region``, write the cache, return the table (origin "live").

    Follows ``NextPageLink`` until it is null (at most :data:`MAX_PAGES` pages). Keeps Linux rows (drops
    any ``productName`` containing "Windows") billed per "1 Hour"; Spot / Low Priority meters become
    "low-priority" (Spot preferred), the rest "dedicated". Raises PriceError when the API cannot be
    reached, answers an HTTP error or something that is not the expected JSON, or has no price for any of
    our SKUs in the region; the cache and the bundled prices are left as they were.
    """
    region = _normalize_region(region)
    skus = list(load_skus())
    url: str | None = _first_url(api_url, build_filter(region, skus))
    items: list[dict[str, Any]] = []
    pages = 0
    while url:
        if pages >= MAX_PAGES:
            raise PriceError(
                f"the Azure Retail Prices API kept paging past {MAX_PAGES} pages; giving up, bundled prices remain in use"
            )
        doc = _get_json(url, timeout_s)
        items.extend(doc["Items"])
        pages += 1
        url = doc.get("NextPageLink") or None
    today = _dt.date.today().isoformat()
    prices = prices_from_items(items, region, skus, today)
    if not prices:
        raise PriceError(
            f"the Azure Retail Prices API has no Linux prices for our GPU sizes in region {region!r} "
            f"({len(items)} rows read); check the region name (e.g. 'eastus'). Bundled prices remain in use"
        )
    table = PriceTable(
        region=region,
        prices=prices,
        fetched_on=today,
        origin="live",
        note=f"prices fetched from the Azure Retail Prices API on {today}",
    )
    try:
        _write_cache(table, api_url)
    except OSError as exc:
        table.note += f" (could not save them to {cache_path(region)}: {exc})"
    return table
