"""The trial protocol: its parts (``protocol_model``) and the checker that builds it (``protocol_parse``).

This is the module the rest of the application imports; the split underneath only keeps files short and
lets ``crf``/``derive`` use the field types without importing the checker that uses them.
"""

from __future__ import annotations

from trialmgr.domain.protocol_model import (
    COMPARISON_OPS,
    CONDITION_OPS,
    CRITERION_KINDS,
    DEFAULT_TEXT_MAX_LENGTH,
    FIELD_TYPES,
    FORM_KINDS,
    ROLES,
    UNSTRATIFIED_KEY,
    YESNO_LEVELS,
    Arm,
    Choice,
    Condition,
    Criterion,
    CrossCheck,
    Derived,
    FieldSpec,
    FormDef,
    Protocol,
    RandomizationDesign,
    Site,
    Visit,
)
from trialmgr.domain.protocol_parse import parse_protocol

__all__ = [
    "COMPARISON_OPS",
    "CONDITION_OPS",
    "CRITERION_KINDS",
    "DEFAULT_TEXT_MAX_LENGTH",
    "FIELD_TYPES",
    "FORM_KINDS",
    "ROLES",
    "UNSTRATIFIED_KEY",
    "YESNO_LEVELS",
    "Arm",
    "Choice",
    "Condition",
    "CrossCheck",
    "Criterion",
    "Derived",
    "FieldSpec",
    "FormDef",
    "Protocol",
    "RandomizationDesign",
    "Site",
    "Visit",
    "parse_protocol",
]
