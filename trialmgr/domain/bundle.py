"""Verifying an exported dataset bundle with no database and no trust in the server that made it: the
manifest's Ed25519 signature, the SHA-256 of every file, no file missing or added, and the audit trail inside
the bundle (hash links, signed checkpoints, the checkpoint the manifest names)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from trialmgr.domain import audit as chainlib
from trialmgr.domain.audit_verify import Verifier

MANIFEST = "manifest.json"


@dataclass
class BundleReport:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    files: int = 0
    entries: int = 0
    checkpoints: int = 0
    redacted: int = 0
    kind: str = ""
    key_source: str = ""

    def fail(self, message: str) -> None:
        self.ok = False
        self.problems.append(message)


def verify_bundle(path: str | Path, public_key_pem: bytes | None = None) -> BundleReport:
    report = BundleReport()
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        report.fail(f"not a readable zip file: {exc}")
        return report
    with zf:
        names = set(zf.namelist())
        if MANIFEST not in names:
            report.fail("manifest.json is missing")
            return report
        try:
            manifest = json.loads(zf.read(MANIFEST))
        except ValueError as exc:
            report.fail(f"manifest.json is not valid JSON: {exc}")
            return report
        report.kind = manifest.get("kind", "")
        if public_key_pem is None:
            if "audit/public_key.pem" not in names:
                report.fail("no public key given and none in the bundle")
                return report
            public_key_pem = zf.read("audit/public_key.pem")
            report.key_source = "the key inside the bundle (compare its id with the one the data manager published)"
        else:
            report.key_source = "the public key given"
        try:
            public_key = chainlib.load_public_key_pem(public_key_pem)
        except ValueError as exc:
            report.fail(f"the public key cannot be read: {exc}")
            return report
        signature = manifest.pop("signature", None)
        if manifest.get("key_id") != chainlib.key_id(public_key):
            report.fail(f"the manifest was signed with key {manifest.get('key_id')}, not with the key given "
                        f"({chainlib.key_id(public_key)})")
        elif not signature or not chainlib.verify_bytes(public_key, chainlib.canonical_bytes(manifest), signature):
            report.fail("the manifest's signature is invalid: manifest.json was changed or forged")
        listed = manifest.get("files", {})
        for name in sorted(names - set(listed) - {MANIFEST}):
            report.fail(f"{name} is in the bundle but not in the manifest (added)")
        for name, digest in sorted(listed.items()):
            if name not in names:
                report.fail(f"{name} is listed in the manifest but missing from the bundle")
                continue
            sha = hashlib.sha256()
            with zf.open(name) as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    sha.update(chunk)
            if sha.hexdigest() != digest:
                report.fail(f"{name} was changed: its SHA-256 does not match the manifest")
            report.files += 1
        if "audit/entries.jsonl" in names and "audit/checkpoints.jsonl" in names:
            cp = manifest.get("checkpoint") or None
            verifier = Verifier(_trusted_keys(zf, names, public_key, report),
                                chain_filter=chainlib.trial_filter(manifest.get("trial", "")), allow_redacted=True,
                                known_checkpoint=(cp["seq"], cp["hash"]) if cp else None)
            with zf.open("audit/checkpoints.jsonl") as fh:
                for line in fh:
                    if line.strip():
                        verifier.add_checkpoint(json.loads(line))
            with zf.open("audit/entries.jsonl") as fh:
                verifier.add_entries(json.loads(line) for line in fh if line.strip())
            result = verifier.finish()
            report.entries, report.checkpoints, report.redacted = result.entries, result.checkpoints, result.redacted
            if not result.ok:
                report.fail(f"audit trail: {result.problem.message}")
        else:
            report.fail("the audit trail (audit/entries.jsonl, audit/checkpoints.jsonl) is missing")
    return report


def _trusted_keys(zf: zipfile.ZipFile, names: set[str], public_key, report: BundleReport) -> dict:
    """The key given (or the bundle's own) and the retired keys the bundle carries for checkpoints signed
    before a key rotation. The retired keys are trusted only because the manifest, signed by the current key,
    lists their files' hashes: if that signature failed, the report has already failed."""
    keys = {chainlib.key_id(public_key): public_key}
    for name in sorted(n for n in names if n.startswith("audit/retired_keys/") and n.endswith(".pem")):
        try:
            pub = chainlib.load_public_key_pem(zf.read(name))
        except ValueError as exc:
            report.fail(f"{name} cannot be read: {exc}")
            continue
        keys.setdefault(chainlib.key_id(pub), pub)
    return keys
