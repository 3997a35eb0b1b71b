"""The catalog's modules import in one direction: ``types`` imports nothing of the catalog, ``models`` imports
``types``. Each is imported first, alone, in a fresh interpreter, so no earlier import can hide a circle."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CATALOG = Path(__file__).resolve().parent.parent / "engine" / "catalog"


def _catalog_imports(path: Path) -> set[str]:
    """The catalog modules ``path`` imports, at its top or inside functions (``from .models import x`` -> models)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.add(node.module or "")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("distill_studio.engine.catalog."):
            found.add(node.module.rsplit(".", 1)[1])
    return found


def test_types_imports_nothing_of_the_catalog_and_models_imports_types():
    assert _catalog_imports(CATALOG / "types.py") == set()
    assert "types" in _catalog_imports(CATALOG / "models.py")


def test_the_import_check_sees_an_import_inside_a_function(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def params(self):\n    from .models import count_params\n    return count_params(self)\n")
    assert _catalog_imports(f) == {"models"}


@pytest.mark.parametrize("first", ["types", "models"])
def test_each_module_imports_first_and_alone(first):
    script = (f"import sys\nimport distill_studio.engine.catalog.{first} as m\n"
              "from distill_studio.engine.catalog.types import ModelSpec\n"
              "from distill_studio.engine.catalog.models import count_params, load_models\n"
              "spec = load_models()['qwen2.5-7b']\n"
              "assert spec.params == count_params(spec) == 7_615_616_512, spec.params\n"
              "print(sorted(k for k in sys.modules if k.startswith('distill_studio.engine.catalog.')))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"distill_studio.engine.catalog.{first}" in r.stdout


def test_types_alone_counts_parameters_without_loading_the_catalog():
    script = ("import sys\nfrom distill_studio.engine.catalog.types import ModelSpec\n"
              "s = ModelSpec(id='t', name='t', hub_id='', family='llama', num_layers=2, hidden_size=8, "
              "intermediate_size=16, num_attention_heads=2, num_kv_heads=1, head_dim=4, vocab_size=10, "
              "tokenizer_vocab_size=10, tie_word_embeddings=False, max_context_tokens=64, tokenizer_family='x', "
              "license='')\n"
              "print(s.params, 'distill_studio.engine.catalog.models' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # embedding 80 + 2 layers × (attention 8·8 + 2·8·4 + 8·8 = 192, gated MLP 3·8·16 = 384, 2 norms 16) + final norm 8
    # + lm_head 80
    assert r.stdout.split() == [str(80 + 2 * (192 + 384 + 16) + 8 + 80), "False"]
