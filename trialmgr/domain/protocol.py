"""The trial protocol: its parts (``protocol_model``) and the checker that builds it (``protocol_parse``).

This is the module the rest of the application imports; the split underneath only keeps files short and
lets ``crf``/``derive`` use the field types without importing the checker that uses them.
"""

from __future__ import annotations

from trialmgr.domain import protocol_model
from trialmgr.domain.protocol_parse import parse_protocol

__all__ = [*protocol_model.__all__, "parse_protocol"]
