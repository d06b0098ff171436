"""The domain stays pure: importing it never loads a web or database framework."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import trialmgr.domain

FORBIDDEN = ("flask", "sqlalchemy", "wtforms", "werkzeug", "flask_wtf", "flask_login", "alembic", "jinja2")
# orjson only accelerates the audit entry encoding; domain.audit checks it against the stdlib encoder and falls
# back to that encoder without it, so the domain still needs nothing beyond stdlib, numpy and cryptography.
ALLOWED_THIRD_PARTY = ("numpy", "cryptography", "orjson")
DOMAIN_DIR = Path(trialmgr.domain.__file__).parent

# The package ``trialmgr/__init__.py`` belongs to the app factory and may import Flask at the top; a
# placeholder package lets the domain load on its own, so this test judges the domain alone.
_PROBE = f"""
import importlib, json, pkgutil, sys, types
pkg = types.ModuleType("trialmgr")
pkg.__path__ = [{str(DOMAIN_DIR.parent)!r}]
sys.modules["trialmgr"] = pkg
import trialmgr.domain
names = [m.name for m in pkgutil.walk_packages(trialmgr.domain.__path__, "trialmgr.domain.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({{"imported": names, "loaded": sorted(sys.modules)}}))
"""


def test_importing_every_domain_module_loads_no_framework() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert "trialmgr.domain.protocol" in report["imported"]
    loaded = {name.split(".")[0] for name in report["loaded"]}
    assert not loaded & set(FORBIDDEN)


def test_domain_sources_import_only_stdlib_numpy_and_cryptography() -> None:
    stdlib = set(sys.stdlib_module_names)
    for info in pkgutil.walk_packages([str(DOMAIN_DIR)]):
        path = DOMAIN_DIR / f"{info.name}.py"
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                ok = root in stdlib or root in ALLOWED_THIRD_PARTY or root == "trialmgr"
                assert ok, f"{path.name} imports {root}"
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trialmgr."):
                assert node.module.startswith("trialmgr.domain"), f"{path.name} reaches up to {node.module}"
