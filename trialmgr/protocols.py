"""Reading protocol files (TOML) into ``domain.Protocol``.

The only place that touches the file system for protocols; the checking itself is in
``trialmgr.domain.protocol``. Every mistake names the file, and TOML syntax errors name the line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tomllib
from pathlib import Path

from trialmgr.domain.errors import ProtocolInvalid
from trialmgr.domain.protocol import Protocol, parse_protocol

DEFAULT_PROTOCOL_FILE = "hip-pt-clbp.toml"
_TOML_POSITION = re.compile(r"^(?P<msg>.*?) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")
_TOML_END = re.compile(r"^(?P<msg>.*?) \(at end of document\)$")


def protocol_dir() -> Path:
    """The ``protocols/`` directory at the repository root."""
    return Path(__file__).resolve().parent.parent / "protocols"


def default_protocol_path() -> Path:
    return protocol_dir() / DEFAULT_PROTOCOL_FILE


def load_protocol_file(path: str | Path) -> Protocol:
    """Read and check a protocol file; ``sha256`` identifies the exact bytes that were read."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProtocolInvalid([f"{source}: cannot read file: {exc.strerror or exc}"], source=source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolInvalid(
            [f"{source}: not UTF-8 text (byte {exc.start})"], source=source,
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolInvalid([_toml_error(source, exc, text)], source=source) from None
    protocol = parse_protocol(data, source=source)
    return dataclasses.replace(protocol, sha256=hashlib.sha256(raw).hexdigest())


def _toml_error(source: str, exc: tomllib.TOMLDecodeError, text: str) -> str:
    # Python 3.11's TOMLDecodeError has the position only inside its message.
    message = str(exc)
    match = _TOML_POSITION.match(message)
    if match:
        return f"{source}: line {match['line']}, column {match['col']}: invalid TOML: {match['msg']}"
    match = _TOML_END.match(message)
    if match:
        return f"{source}: line {text.count(chr(10)) + 1} (end of file): invalid TOML: {match['msg']}"
    return f"{source}: invalid TOML: {message}"


__all__ = ["default_protocol_path", "load_protocol_file", "protocol_dir"]
