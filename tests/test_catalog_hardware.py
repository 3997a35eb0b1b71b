"""The hardware catalog: accelerators, Azure SKUs, validation and name resolution."""
from __future__ import annotations

import datetime as dt

import pytest

from distill_studio.engine.catalog import hardware as H
from distill_studio.engine.catalog.types import Accelerator, AzureSku
from distill_studio.engine.errors import CatalogError

REQUIRED_ACCELERATORS = {
    "a100-80gb-sxm", "a100-80gb-pcie", "a100-40gb-sxm", "h100-sxm", "h100-nvl", "h200", "mi300x",
    "a10", "t4", "tpu-v5e", "tpu-v5p", "tpu-v6e",
}
TPUS = {"tpu-v5e", "tpu-v5p", "tpu-v6e"}
REQUIRED_SKUS = {
    "Standard_ND96isr_H100_v5", "Standard_ND96isr_H200_v5", "Standard_ND96isr_MI300X_v5",
    "Standard_ND96amsr_A100_v4", "Standard_ND96asr_v4",
    "Standard_NC24ads_A100_v4", "Standard_NC48ads_A100_v4", "Standard_NC96ads_A100_v4",
    "Standard_NC40ads_H100_v5", "Standard_NC80adis_H100_v5",
    "Standard_NV36ads_A10_v5", "Standard_NV72ads_A10_v5",
    "Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3", "Standard_NC16as_T4_v3", "Standard_NC64as_T4_v3",
}


def test_all_required_accelerators_exist():
    accs = H.load_accelerators()
    assert REQUIRED_ACCELERATORS <= set(accs)
    assert all(isinstance(a, Accelerator) for a in accs.values())


def test_all_required_skus_exist():
    skus = H.load_skus()
    assert REQUIRED_SKUS <= set(skus)
    assert all(isinstance(s, AzureSku) for s in skus.values())


def test_loads_are_cached():
    assert H.load_accelerators() is H.load_accelerators()
    assert H.load_skus() is H.load_skus()


def test_every_record_has_a_source_and_an_iso_date():
    for rec in [*H.load_accelerators().values(), *H.load_skus().values()]:
        assert "http" in rec.source, rec.id
        dt.date.fromisoformat(rec.source_date)


@pytest.mark.parametrize(
    "acc_id, bf16, fp8, hbm, bw",
    [
        ("h100-sxm", 989.5, 1979.0, 80, 3350),
        ("h100-nvl", 835.5, 1670.5, 94, 3900),
        ("h200", 989.5, 1979.0, 141, 4800),
        ("mi300x", 1307.4, 2614.9, 192, 5300),
        ("a100-80gb-sxm", 312, 0, 80, 2039),
        ("a100-80gb-pcie", 312, 0, 80, 1935),
        ("a100-40gb-sxm", 312, 0, 40, 1555),
        ("a10", 125, 0, 24, 600),
        ("t4", 65, 0, 16, 320),
    ],
)
def test_key_accelerator_figures(acc_id, bf16, fp8, hbm, bw):
    a = H.load_accelerators()[acc_id]
    assert (a.bf16_dense_tflops, a.fp8_dense_tflops, a.hbm_gb, a.hbm_gb_per_s) == (bf16, fp8, hbm, bw)


def test_tpus_are_gcp_comparison_only_and_never_back_a_sku():
    accs = H.load_accelerators()
    for tpu in TPUS:
        assert accs[tpu].cloud == "gcp"
        assert accs[tpu].comparison_only is True
        assert accs[tpu].vendor == "google"
    used = {s.accelerator for s in H.load_skus().values()}
    assert not used & TPUS
    # and everything an SKU uses is an Azure part
    assert all(accs[a].cloud == "azure" and not accs[a].comparison_only for a in used)


def test_sku_references_and_numbers_are_consistent():
    accs = H.load_accelerators()
    for sku in H.load_skus().values():
        acc = accs[sku.accelerator]
        assert sku.gpu_memory_gb == acc.hbm_gb, sku.id
        assert sku.gpus >= 1 and sku.vcpus >= 1 and sku.ram_gb > 0
        assert sku.intra_node_link in H.INTRA_NODE_LINKS
        if sku.gpus == 1:
            assert sku.intra_node_link == "none" and sku.intra_node_gb_per_s == 0
        else:
            assert sku.intra_node_link != "none" and sku.intra_node_gb_per_s > 0
        if sku.infiniband:
            assert sku.inter_node_gb_per_s > 0


@pytest.mark.parametrize(
    "sku_id, acc_id, gpus, link, ib, inter",
    [
        ("Standard_ND96isr_H100_v5", "h100-sxm", 8, "nvlink", True, 400),
        ("Standard_ND96isr_H200_v5", "h200", 8, "nvlink", True, 400),
        ("Standard_ND96isr_MI300X_v5", "mi300x", 8, "infinity-fabric", True, 400),
        ("Standard_ND96amsr_A100_v4", "a100-80gb-sxm", 8, "nvlink", True, 200),
        ("Standard_ND96asr_v4", "a100-40gb-sxm", 8, "nvlink", True, 200),
        ("Standard_NC24ads_A100_v4", "a100-80gb-pcie", 1, "none", False, 2.5),
        ("Standard_NC96ads_A100_v4", "a100-80gb-pcie", 4, "pcie", False, 10),
        ("Standard_NC40ads_H100_v5", "h100-nvl", 1, "none", False, 5),
        ("Standard_NC80adis_H100_v5", "h100-nvl", 2, "nvlink", False, 10),
        ("Standard_NV36ads_A10_v5", "a10", 1, "none", False, 5),
        ("Standard_NV72ads_A10_v5", "a10", 2, "pcie", False, 10),
        ("Standard_NC64as_T4_v3", "t4", 4, "pcie", False, 4),
    ],
)
def test_key_sku_figures(sku_id, acc_id, gpus, link, ib, inter):
    s = H.load_skus()[sku_id]
    assert (s.accelerator, s.gpus, s.intra_node_link, s.infiniband, s.inter_node_gb_per_s) == (
        acc_id, gpus, link, ib, inter
    )


def test_partial_gpu_a10_sizes_are_left_out():
    skus = H.load_skus()
    for partial in ("Standard_NV6ads_A10_v5", "Standard_NV12ads_A10_v5", "Standard_NV18ads_A10_v5"):
        assert partial not in skus


@pytest.mark.parametrize(
    "name, expected",
    [
        ("H100", "h100-sxm"),
        ("h100", "h100-sxm"),
        ("A100", "a100-80gb-sxm"),
        ("h100-sxm", "h100-sxm"),
        ("H100-SXM", "h100-sxm"),
        ("H100 NVL", "h100-nvl"),
        ("NVIDIA H100 SXM 80GB", "h100-sxm"),
        ("nvidia a100 80gb pcie", "a100-80gb-pcie"),
        ("A100 40GB", "a100-40gb-sxm"),
        ("MI300X", "mi300x"),
        ("H200", "h200"),
        ("t4", "t4"),
        ("v6e", "tpu-v6e"),
        ("  a10 ", "a10"),
    ],
)
def test_resolve_accelerator(name, expected):
    assert H.resolve_accelerator(name).id == expected


@pytest.mark.parametrize(
    "name",
    ["Standard_ND96isr_H100_v5", "ND96isr_H100_v5", "nd96isr_h100_v5", "STANDARD_ND96ISR_H100_V5"],
)
def test_resolve_sku_spellings(name):
    assert H.resolve_sku(name).id == "Standard_ND96isr_H100_v5"


def test_resolve_sku_docs_alias():
    assert H.resolve_sku("Standard_ND96asr_A100_v4").id == "Standard_ND96asr_v4"


def test_unknown_accelerator_names_value_and_suggestions():
    with pytest.raises(CatalogError) as err:
        H.resolve_accelerator("h1000")
    msg = str(err.value)
    assert "'h1000'" in msg
    assert "closest:" in msg
    suggestions = msg.split("closest:")[1].split(",")
    assert 1 <= len(suggestions) <= 3
    assert any("h100" in s for s in suggestions)


def test_unknown_sku_names_value_and_suggestions():
    with pytest.raises(CatalogError) as err:
        H.resolve_sku("ND96isr_H100_v6")
    msg = str(err.value)
    assert "ND96isr_H100_v6" in msg
    assert "Standard_ND96isr_H100_v5" in msg
    assert len(msg.split("closest:")[1].split(",")) <= 3


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_empty_names_are_catalog_errors(bad):
    with pytest.raises(CatalogError):
        H.resolve_accelerator(bad)
    with pytest.raises(CatalogError):
        H.resolve_sku(bad)


def test_validation_rejects_unknown_accelerator_and_memory_mismatch():
    accs = H.load_accelerators()
    good = H.load_skus()["Standard_ND96isr_H100_v5"]
    from dataclasses import replace

    with pytest.raises(CatalogError, match="h999"):
        H._validate_sku(replace(good, accelerator="h999"), accs)
    with pytest.raises(CatalogError, match="gpu_memory_gb"):
        H._validate_sku(replace(good, gpu_memory_gb=40.0), accs)
    with pytest.raises(CatalogError, match="comparison-only"):
        H._validate_sku(replace(good, accelerator="tpu-v5e", gpu_memory_gb=16.0), accs)
    with pytest.raises(CatalogError, match="gpus"):
        H._validate_sku(replace(good, gpus=0), accs)
    with pytest.raises(CatalogError, match="ram_gb"):
        H._validate_sku(replace(good, ram_gb=-1.0), accs)
    with pytest.raises(CatalogError, match="intra_node_link"):
        H._validate_sku(replace(good, intra_node_link="ethernet"), accs)


def test_validation_rejects_bad_accelerator_numbers():
    from dataclasses import replace

    good = H.load_accelerators()["h100-sxm"]
    with pytest.raises(CatalogError, match="bf16_dense_tflops"):
        H._validate_accelerator(replace(good, bf16_dense_tflops=0.0))
    with pytest.raises(CatalogError, match="vendor"):
        H._validate_accelerator(replace(good, vendor="intel"))


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys; import distill_studio.engine.catalog.hardware, distill_studio.engine.catalog.prices;"
        "heavy = [m for m in ('torch', 'transformers', 'PySide6') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
