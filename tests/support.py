"""Constants and small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PROTOCOL = REPO / "protocols" / "hip-pt-clbp.toml"
MASH_PROTOCOL = REPO / "protocols" / "mash.toml"
PASSWORD = "correct horse battery staple"


def csrf_token(client, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    m = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert m, f"no CSRF token on {path}"
    return m.group(1)
