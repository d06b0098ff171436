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


def eligible_answers(**overrides) -> dict:
    """Screening answers that meet every criterion of the default trial (as form text)."""
    answers = {
        "sex": "F", "date_of_birth": "1950-03-14", "back_pain_months": "12", "mmse_score": "28",
        "hip_fracture_surgical": "no", "hip_fracture_recent": "no", "total_hip_replacement": "no",
        "spinal_pathology": "no", "needs_wheelchair": "no", "sensory_impairment": "no",
        "reads_speaks_language": "yes", "red_flags": "no", "leg_pain_exceeds_back": "no",
    }
    answers.update(overrides)
    return answers
