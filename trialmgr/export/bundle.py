"""Build the signed dataset bundle: a deterministic zip whose manifest lists the SHA-256 of every file and is
signed with the instance's Ed25519 key. Streamed: memory does not grow with the trial's size."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import operator
import queue
import re
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from itertools import chain
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from trialmgr.config import Settings
from trialmgr.db.models_audit import AuditEntry
from trialmgr.domain import audit as chainlib
from trialmgr.domain.protocol import Protocol
from trialmgr.domain.vocab import DataState, Role
from trialmgr.export import audit_trail, dataset, formats, odm
from trialmgr.keys import audit_private_key, audit_public_keys
from trialmgr.services import audit, trials
from trialmgr.services.context import Actor

try:  # ISA-L's deflate: about five times faster than zlib's at level 1, for a slightly smaller zip
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib writes the same kind of zip, slower
    _deflate = None

FORMAT = "trialmgr-bundle-v1"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same data give the same bytes
BLINDED_ENTITIES = audit_trail.BLINDED_ENTITIES
Progress = Callable[[str, int, int], None]


def software_version() -> str:
    try:
        return version("trialmgr")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


class _Stream(io.TextIOBase):
    """A text stream into one zip member: text is gathered into ~1 MiB pieces (a csv writer writes a few bytes
    at a time; encoding, hashing and compressing each piece separately dominated the export), encoded, and
    handed to the zip's writer thread."""

    LIMIT = 1 << 20

    def __init__(self, put: Callable[[bytes], None]) -> None:
        self.put = put
        self.parts: list[str] = []
        self.size = 0

    def write(self, s: str) -> int:
        self.parts.append(s)
        self.size += len(s)
        if self.size >= self.LIMIT:
            self.flush()
        return len(s)

    def write_bytes(self, b: bytes) -> None:
        self.flush()
        self.put(b)

    def flush(self) -> None:
        if self.parts:
            b = "".join(self.parts).encode("utf-8")
            self.parts, self.size = [], 0
            self.put(b)

    def writable(self) -> bool:
        return True


class _Zip:
    """The bundle's zip, written by a thread of its own.

    Members are written one after another, in the order they are given. The producer (the export, in the
    calling thread) formats text; the writer thread hashes, checksums and deflates it. The compressor (ISA-L),
    hashlib and file writes release the GIL on large buffers, so the compression runs on the second core
    alongside the formatting instead of after it. The queue is bounded: memory stays a few MiB whatever the
    trial's size. The zip's bytes depend only on the members' bytes and order (fixed timestamps, fixed
    compressor and level).
    """

    LEVEL = 1  # deflate level: zlib's 1 is 3x faster than its 6 for a bundle ~30 % larger (bench/bench_export.py)

    def __init__(self, path: Path) -> None:
        self.zf = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=self.LEVEL)
        self.hashes: dict[str, str] = {}
        self._jobs: queue.Queue = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bundle-zip", daemon=True)
        self._thread.start()

    # -- the writer thread --

    def _member(self, name: str):
        info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info._compresslevel = self.LEVEL  # what ZipFile.write() sets; open(info, "w") reads it (default: 6)
        info.external_attr = 0o644 << 16
        out = self.zf.open(info, "w", force_zip64=True)
        if _deflate is not None and isinstance(getattr(out, "_compressor", None), type(zlib.compressobj())):
            # The member's raw deflate stream from ISA-L instead of zlib: still plain deflate in a plain zip
            # (any unzip, Python's zipfile, verify_bundle read it); the data files' bytes and hashes are the
            # same, only the compressed bytes differ. zipfile keeps computing the CRC and the sizes itself.
            out._compressor = _deflate.compressobj(self.LEVEL, _deflate.DEFLATED, -15)
        return out

    def _run(self) -> None:
        raw = sha = None
        while True:
            job = self._jobs.get()
            if job is None:
                if raw is not None:  # the producer failed mid-member
                    with contextlib.suppress(Exception):
                        raw.close()
                return
            kind, name, payload = job
            if kind == "sync":
                payload.set()
                continue
            if self._error is not None:
                continue  # drain: the producer sees the error at its next put(), wait() or close()
            try:
                if kind == "open":
                    raw, sha = self._member(name), hashlib.sha256()
                elif kind == "data":
                    sha.update(payload)
                    raw.write(payload)
                elif kind == "close":
                    raw.close()
                    self.hashes[name] = sha.hexdigest()
                    raw = sha = None
                elif kind == "more":  # a spooled file's bytes, appended to the open member
                    # (The member's hash has taken every byte given before, and takes nothing else until this ends.)
                    _copy_while_hashing(payload, raw.write, sha)
                elif kind == "file":  # a spooled file as a member
                    digest = hashlib.sha256()
                    with self._member(name) as out:
                        _copy_while_hashing(payload, out.write, digest)
                    self.hashes[name] = digest.hexdigest()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the producer's thread
                self._error = exc

    # -- the producer's side --

    def _put(self, job) -> None:
        if self._error is not None:
            raise self._error
        self._jobs.put(job)

    def text(self, name: str, producer: Callable[[_Stream], None]) -> None:
        self._put(("open", name, None))
        out = _Stream(lambda b: self._put(("data", name, b)))
        producer(out)
        out.flush()
        self._put(("close", name, None))

    def begin(self, name: str) -> Callable[[bytes], None]:
        """Open a member and return its writer (safe to call from another thread); end() closes it. Nothing else
        may be given to the zip in between."""
        self._put(("open", name, None))
        return lambda b: self._put(("data", name, b))

    def append(self, name: str, path: Path) -> None:
        """Append a spooled file's bytes to the member begin() opened (read by the writer thread: keep the file
        until close())."""
        self._put(("more", name, path))

    def end(self, name: str) -> None:
        self._put(("close", name, None))

    def copy(self, name: str, path: Path) -> None:
        """Add a spooled file as a member (read by the writer thread: keep the file until close())."""
        self._put(("file", name, path))

    def csv(self, name: str, rows) -> int:
        count = [0]

        def produce(out):
            w = csv.writer(out, lineterminator="\n")
            for row in rows:
                w.writerow(row)
                count[0] += 1

        self.text(name, produce)
        return max(0, count[0] - 1)

    def wait(self) -> dict[str, str]:
        """Wait until every member given so far is written; their hashes."""
        done = threading.Event()
        self._put(("sync", "", done))
        done.wait()
        if self._error is not None:
            raise self._error
        return self.hashes

    def close(self, *, quiet: bool = False) -> None:
        """Finish the zip (quiet: after a failure in the producer, whose exception is the one to report)."""
        self._jobs.put(None)
        self._thread.join()
        try:
            self.zf.close()
        except Exception:
            if not quiet:
                raise
        if self._error is not None and not quiet:
            raise self._error


def _copy_while_hashing(path: Path, write: Callable[[bytes], object], sha) -> None:
    """A spooled file's bytes through `write` (the zip member: checksum and deflate) while a thread of its own
    feeds them to `sha`: the spooled files come last, when the formatting is over and the other core is idle."""
    done: list[bool] = []
    hasher = threading.Thread(target=_sha256_update, args=(path, sha, done), name="bundle-hash", daemon=True)
    hasher.start()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                write(chunk)
    finally:
        hasher.join()
    if not done:
        raise OSError(f"could not hash {path}")


def _sha256_update(path: Path, sha, done: list[bool]) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    done.append(True)


def _masked_protocol(text: str, proto: Protocol, letters: dict[str, str]) -> str:
    """The protocol file with arm codes and labels replaced by neutral letters (blinded bundles)."""
    out = text
    for arm in proto.arms:
        out = re.sub(rf'"{re.escape(arm.code)}"', f'"{letters[arm.code]}"', out)
        out = out.replace(arm.label, f"Arm {letters[arm.code]}")
    return out


def build(session: Session, actor: Actor, settings: Settings, trial_id: str, out_path: Path, *,
          blinded: bool = False, deidentified: bool = False, progress: Progress | None = None) -> dict:
    """Write the bundle to out_path and return its manifest. Locked data give a final bundle; anything else
    an interim one, labelled so in its name, manifest and README."""
    actor.require(Role.INVESTIGATOR)
    trial = trials.get_trial(session, trial_id)
    version_row = trials.current_version(session, trial_id)
    proto = trials.protocol_from_version(version_row)
    locked = trial.data_state is DataState.LOCKED
    key = audit_private_key(settings)
    if session.get_bind().dialect.name == "postgresql":
        # The export's few large queries gain nothing from JIT compilation, which costs a fixed fraction of a
        # second each (up to a third of the records query); for the rest of this transaction only.
        session.execute(text("SET LOCAL jit = off"))
        # Nor from parallel workers: the export already keeps the machine busy (the records query, the audit
        # trail's connections, the formatting, the zip's thread), and the records query's two workers cost half
        # a second of CPU more than they saved in time, which the other processes then lacked.
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    alongside = audit_trail.can_read_alongside(session)
    cp = audit.create_checkpoint(session, key, "export")
    last_cp = cp or session.scalars(select(audit.Checkpoint).order_by(audit.Checkpoint.seq.desc()).limit(1)).first()
    lock_time = None
    if locked:
        lock_ts = session.scalar(select(func.max(AuditEntry.ts)).where(AuditEntry.trial == trial_id,
                                                                       AuditEntry.action == "trial:lock"))
        lock_time = lock_ts.isoformat().replace("+00:00", "Z") if lock_ts else None
    opts = dataset.ExportOptions(blinded=blinded, deidentified=deidentified, secret=settings.secret_key.encode())
    letters = opts.arm_letters(proto)
    fields_of = lambda form: dataset.exported_fields(form, opts)  # noqa: E731
    tick = progress or (lambda stage, done, total: None)
    counts: dict[str, int] = {}
    tmp = tempfile.TemporaryDirectory(prefix="trialmgr-export-")  # spooled files live until the zip is closed
    z = _Zip(out_path)
    trail = None
    try:
        # The audit trail is the first member: on PostgreSQL it is streamed into the zip by a second connection
        # while the form data are formatted, and deflated meanwhile; the zip takes nothing else until it ends.
        entries = "audit/entries.jsonl"
        if alongside:
            trail = audit_trail.Alongside(session, z.begin(entries), lambda path: z.append(entries, path), trial_id,
                                          blinded, deidentified, Path(tmp.name))
        else:
            z.text(entries, lambda out: audit_trail.write_entries(out.write_bytes, session, trial_id, blinded,
                                                                  deidentified))
        # (Read once the trail's connections are at work: the participants are read meanwhile.)
        subjects = dataset.subjects(session, proto, opts)
        by_id = {s.id: s for s in subjects}
        tick("audit", 1, 4)
        created = lock_time or dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        spooled = _one_pass(session, proto, by_id, opts, Path(tmp.name), counts, odm_head=dict(
            file_oid=f"{trial_id}.{'locked' if locked else 'interim'}", created=created, fields=fields_of,
            description=f"{proto.title} ({'locked' if locked else 'INTERIM, unlocked'} data)"), tick=tick)
        if trail is not None:
            trail.wait()
            z.end(entries)
            trail = None
        factors = [name for name, _ in proto.strata_factors()]
        z.csv("participants.csv", [["participant", "site", *factors, "stratum", "consent_date", "randomization_date",
                                    "arm", "status"]] + [
            [s.code, s.site, *[s.strata.get(f, "") for f in factors], s.stratum,
             dataset.date_text(s.consent_date, s.shift),
             dataset.date_text(s.randomized_at.date() if s.randomized_at else None, s.shift), s.arm or "", s.status]
            for s in subjects])
        counts["participants"] = len(subjects)
        for form in proto.forms:
            z.copy(f"forms/{form.id}.csv", spooled[form.id])
        z.copy("values_long.csv", spooled["_long"])
        z.csv("screening_log.csv", _screening_rows(session, proto, opts))
        for alias, form_id in (("adverse_events.csv", "adverse_event"), ("deviations.csv", "deviation")):
            if form_id in spooled:
                z.copy(alias, spooled[form_id])
        counts["adverse_events"] = counts.get("forms/adverse_event", 0)
        counts["queries"] = z.csv("queries.csv", _query_rows(session, proto, by_id))
        z.csv("data_dictionary.csv", formats.dictionary_rows(proto, fields_of))
        z.copy("odm.xml", spooled["_odm"])
        tick("files", 2, 4)
        protocol_text = version_row.source_text
        if blinded:
            protocol_text = _masked_protocol(protocol_text, proto, letters)
        z.text("protocol.toml", lambda out: out.write(protocol_text))
        arm_codes = [(letters[a.code], f"Arm {letters[a.code]}") for a in proto.arms] if blinded else \
            [(a.code, a.label) for a in proto.arms]
        z.text("load.R", lambda out: out.write(formats.r_script(proto, list(proto.forms), fields_of, arm_codes)))
        z.text("load.do", lambda out: out.write(formats.stata_script(proto, list(proto.forms), fields_of)))
        tick("scripts", 3, 4)
        z.text("audit/checkpoints.jsonl", lambda out: _checkpoints(out, session))
        z.text("audit/public_key.pem", lambda out: out.write(chainlib.public_key_pem(key).decode()))
        # Keys retired by `trialmgr keys rotate-audit` signed the older checkpoints; the signed manifest lists
        # their files' hashes, so the current key vouches for them (docs/keys.md).
        current_id = chainlib.key_id(key.public_key())
        for kid, pub in sorted(audit_public_keys(settings).items()):
            if kid != current_id:
                z.text(f"audit/retired_keys/{kid}.pem", lambda out, pub=pub: out.write(chainlib.public_key_pem(pub)
                                                                                      .decode()))
        manifest = {
            "format": FORMAT,
            "trial": trial_id,
            "title": proto.title,
            "kind": "locked" if locked else "interim",
            "blinded": blinded,
            "deidentified": deidentified,
            "protocol_version": proto.version,
            "protocol_sha256": version_row.sha256,
            "lock_time": lock_time,
            "exported_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            "exporter": f"{actor.full_name} ({actor.username})",
            "software": software_version(),
            "checkpoint": {"seq": last_cp.seq, "hash": chainlib.checkpoint_hash(last_cp.body)} if last_cp else None,
            "key_id": chainlib.key_id(key.public_key()),
            "counts": counts,
        }
        z.text("README.txt", lambda out: out.write(formats.readme(proto, manifest)))
        manifest["files"] = dict(sorted(z.wait().items()))
        manifest["signature"] = chainlib.sign_bytes(key, chainlib.canonical_bytes(manifest))
        z.text("manifest.json", lambda out: out.write(json.dumps(manifest, indent=1, sort_keys=True) + "\n"))
    except BaseException:
        if trail is not None:
            with contextlib.suppress(BaseException):
                trail.wait()
        z.close(quiet=True)
        tmp.cleanup()
        raise
    z.close()
    tmp.cleanup()
    audit.record(session, actor, "export:create", "export", out_path.name, trial=trial_id, field="manifest",
                 new=f"{manifest['kind']} bundle, blinded={blinded}, deidentified={deidentified}, manifest sha256 "
                     f"{z.hashes['manifest.json']}")
    tick("done", 4, 4)
    return manifest


def _form_header(form, fields) -> list[str]:
    header = ["participant", "site", "visit", "instance", "visit_date", "form_status", "sdv"]
    for f in fields:
        header.append(f.id)
        if f.type in ("choice", "multichoice", "yesno"):
            header.append(f"{f.id}_label")
        header.append(f"{f.id}_missing")
    return header + [d.id for d in form.derived]


def _form_row(form, fields, r) -> list:
    s = r.subject
    row = [s.code, s.site, r.visit_code or "", r.instance, dataset.date_text(r.visit_date, s.shift), r.status,
           "yes" if r.sdv else "no"]
    for f in fields:
        text = dataset.value_text(f, r.values.get(f.id), s.shift)
        row.append(text)
        if f.type in ("choice", "multichoice", "yesno"):
            row.append(dataset.label_of(f, text) if f.type != "yesno" else text.capitalize())
        row.append(r.missing.get(f.id, ""))
    row += [r.values.get(d.id, "") for d in form.derived]
    return row


def _long_rows(form, fields, r):
    s = r.subject
    for f in fields:
        if f.id in r.values or f.id in r.missing:
            text = dataset.value_text(f, r.values.get(f.id), s.shift)
            yield [s.code, s.site, r.visit_code or "", form.id, r.instance, f.id, text, dataset.label_of(f, text),
                   r.missing.get(f.id, ""), "no"]
    for d in form.derived:
        if d.id in r.values:
            yield [s.code, s.site, r.visit_code or "", form.id, r.instance, d.id, r.values[d.id], "", "", "yes"]


def _odm_event(form, fields, r):
    if r.visit_code is None:
        event, repeat = odm.ANYTIME_EVENT, r.instance
    elif r.visit_code.startswith("UNS"):
        event, repeat = odm.UNSCHEDULED_EVENT, int(r.visit_code[3:] or 1)
    else:
        event, repeat = f"SE.{r.visit_code}", 1
    items = [(f.id, dataset.value_text(f, r.values.get(f.id), r.subject.shift), r.missing.get(f.id)) for f in fields]
    items += [(d.id, r.values.get(d.id), None) for d in form.derived]
    return event, form.id, repeat, items


# Characters that csv.writer (QUOTE_MINIMAL) or XML escaping would change: a record whose text holds none of
# them is formatted by the fast path below; any other record by the csv module and odm.event_xml, as before.
_SPECIAL = dataset.QUOTED


class _Lines(list):
    """A list a csv.writer can write into: lines are gathered and written out in large pieces."""

    write = list.append


def _csv_cell(value: str) -> str:
    """One cell as csv.writer writes it (QUOTE_MINIMAL)."""
    out = _Lines()
    csv.writer(out, lineterminator="\n").writerow([value, ""])
    return "".join(out)[:-2]


def _tuple_getter(keys: list) -> Callable:
    """d -> tuple(d[k] for k in keys), in C (operator.itemgetter gives a bare value for one key)."""
    if len(keys) >= 2:
        return operator.itemgetter(*keys)
    return (lambda d: (d[keys[0]],)) if keys else (lambda d: ())


class _Template:
    """Text made of constant pieces (str) and arguments (int: an index into the tuple of arguments), rendered
    without parsing anything: the constants sit at the even places of a list, the arguments are dropped into
    the odd places with one slice assignment, and the list is joined. (str.format parsed its template anew for
    every record; the arguments' text is taken as it is, whatever braces or percent signs it holds.)"""

    def __init__(self, items: list[str | int]) -> None:
        parts: list[str] = [""]
        slots: list[int] = []
        for item in items:
            if isinstance(item, int):
                slots.append(item)
                parts += [None, ""]  # type: ignore[list-item] - filled at each render
            else:
                parts[-1] += item
        self.parts, self.pick = parts, _tuple_getter(slots)

    def __call__(self, args: tuple) -> str:
        out = self.parts.copy()
        out[1::2] = self.pick(args)
        return "".join(out)


class _FormPlan:
    """One form's rows, with everything that does not depend on the record worked out once: the columns, the
    labels of the codes seen so far (CSV-ready), the ODM element openings. ``fast`` returns a record's wide CSV
    line, its long CSV lines and its ODM StudyEventData, byte-identical to what the csv module and
    odm.event_xml write, or None when the record holds a character either would quote or escape."""

    def __init__(self, form, fields) -> None:
        self.form, self.fields, self.id = form, fields, form.id
        self.header = _form_header(form, fields)
        ids = [form.id, *(f.id for f in fields), *(d.id for d in form.derived)]
        self.usable = not any(_SPECIAL.search(x) for x in ids)
        # (field id, spec, label kind: 0 none, 1 code label, 2 yes/no, is a date)
        self.cols = [(f.id, f, 1 if f.type in ("choice", "multichoice") else 2 if f.type == "yesno" else 0,
                      f.type == "date") for f in fields]
        self.derived = [d.id for d in form.derived]
        self.items = {x: odm.item_open(form.id, x) for x in ids[1:]}
        self.labels: dict[str, dict[str, tuple[str, str]]] = {f.id: {} for f in fields}
        self.events: dict[tuple[str, int], str] = {}
        # (memos by what a record holds: its event's opening by visit and instance, a visit date's text)
        self.event_heads: dict[tuple[str | None, int], str] = {}
        self.dates: dict[dt.date | None, str] = {}
        self._templates()

    def _templates(self) -> None:
        """The three outputs of a record that holds every column and no missing code, as _Templates over the
        arguments: the long CSV prefix (0), the wide CSV head (1), the ODM event opening (2), the texts of the
        fields and derived values, then the long and the wide label cell of each coded field in turn. Such a
        record (the usual one) is then formatted by a few calls into C instead of a loop per value."""
        keys = [fid for fid, *_ in self.cols] + self.derived
        coded = [fid for fid, _spec, kind, _d in self.cols if kind]
        self.keyset = frozenset(keys)
        self.n_values = len(keys)
        self.has_dates = any(is_date for *_, is_date in self.cols)
        self.texts_of = _tuple_getter(keys)
        self.coded_of = _tuple_getter(coded)
        # The same for a record's texts as read (RecordRow.keys, .texts: PostgreSQL), in the order of the keys
        # last read that were every column (the database gives a form's values in one order: its index's)
        self.read_keys: list[str] | None = None
        self.read_texts_of = self.read_coded_of = None
        self.memos = [self.labels[fid] for fid in coded]
        wide: list[str | int] = [1]
        long: list[str | int] = []
        xml: list[str | int] = [2]
        label = 3 + len(keys)
        for i, (fid, _spec, kind, _d) in enumerate(self.cols):
            text = 3 + i
            if kind:
                wide += [",", text, ",", label + 1, ","]
                long += [0, f"{fid},", text, ",", label, ",,no\n"]
                label += 2
            else:
                wide += [",", text, ","]
                long += [0, f"{fid},", text, ",,,no\n"]
            xml += [f'{self.items[fid]} Value="', text, '"/>']
        for k, did in enumerate(self.derived, 3 + len(self.cols)):
            wide += [",", k]
            long += [0, f"{did},", k, ",,,yes\n"]
            xml += [f'{self.items[did]} Value="', k, '"/>']
        self.wide_tpl = _Template([*wide, "\n"])
        self.long_tpl = _Template(long)
        self.xml_tpl = _Template([*xml, odm.EVENT_CLOSE])

    def _read_order(self, keys: list[str]) -> bool:
        """Take the order of these keys as read, if they are every column once: True."""
        if len(keys) != self.n_values or frozenset(keys) != self.keyset:
            return False
        at = {k: i for i, k in enumerate(keys)}
        self.read_keys = list(keys)
        self.read_texts_of = _tuple_getter([at[fid] for fid, *_ in self.cols] + [at[d] for d in self.derived])
        self.read_coded_of = _tuple_getter([at[fid] for fid, _spec, kind, _d in self.cols if kind])
        return True

    def _whole(self, r, vcode: str) -> tuple[str, str, int, str] | None:
        """fast() for a record with every column and no missing code: the templates (None when a value is
        empty, a date must be shifted, a label is not memoized yet, or a column is missing: the loop in fast()
        then). A record's texts as read are taken as they are, when its keys come in the order read before
        (a list compared, not a dict built and looked up)."""
        s = r.subject
        if s.shift and self.has_dates:
            return None
        keys = r.keys
        if keys is not None and (keys == self.read_keys or self._read_order(keys)):
            texts, coded = self.read_texts_of(r.texts), self.read_coded_of(r.texts)
        else:
            vals = r.values
            if vals.keys() != self.keyset:
                return None
            texts, coded = self.texts_of(vals), self.coded_of(vals)
        if "" in texts:
            return None
        labels = tuple(map(dict.get, self.memos, coded))
        if None in labels:
            return None
        head = f"{s.code},{s.site},{vcode},"
        date = self.dates.get(r.visit_date) if not s.shift else None
        if date is None:
            date = dataset.date_text(r.visit_date, s.shift)
            if not s.shift:
                self.dates[r.visit_date] = date
        event = self.event_heads.get((r.visit_code, r.instance)) or self._event_open(r)
        args = (f"{head}{self.id},{r.instance},", f"{head}{r.instance},{date},{r.status},{'yes' if r.sdv else 'no'}",
                event, *texts, *chain.from_iterable(labels))
        return self.wide_tpl(args), self.long_tpl(args), self.n_values, self.xml_tpl(args)

    def _label(self, fid: str, spec, kind: int, text: str) -> tuple[str, str]:
        """(long CSV label cell, wide CSV label cell) of a value; memoized per field (codes are few)."""
        memo = self.labels[fid]
        got = memo.get(text)
        if got is None:
            long_label = dataset.label_of(spec, text)
            got = memo[text] = (_csv_cell(long_label),
                                _csv_cell(long_label if kind == 1 else text.capitalize()))
        return got

    def _event_open(self, r) -> str:
        if r.visit_code is None:
            key = (odm.ANYTIME_EVENT, r.instance)
        elif r.visit_code.startswith("UNS"):
            key = (odm.UNSCHEDULED_EVENT, int(r.visit_code[3:] or 1))
        else:
            key = (f"SE.{r.visit_code}", 1)
        head = self.events.get(key)
        if head is None:
            head = self.events[key] = odm.event_xml(key[0], self.id, key[1], [])[:-len(odm.EVENT_CLOSE)]
        self.event_heads[(r.visit_code, r.instance)] = head
        return head

    def fast(self, r) -> tuple[str, str, int, str] | None:
        s = r.subject
        miss = r.missing
        vcode = r.visit_code or ""
        if not self.usable or _SPECIAL.search(f"{vcode}{r.status}{s.code}{s.site}"):
            return None
        if not r.plain and _SPECIAL.search("".join(r.values.values()) + "".join(miss.values())):
            return None  # (a plain record's values were checked with its participant's: dataset.RecordRow.plain)
        if not miss:
            got = self._whole(r, vcode)
            if got is not None:
                return got
        vals = r.values
        shift = s.shift
        prefix = f"{s.code},{s.site},{vcode},{self.id},{r.instance},"
        wide = [s.code, s.site, vcode, str(r.instance), dataset.date_text(r.visit_date, shift), r.status,
                "yes" if r.sdv else "no"]
        long: list[str] = []
        xml = [self._event_open(r)]
        items = self.items
        for fid, spec, kind, is_date in self.cols:
            present = fid in vals
            text = vals[fid] if present else ""
            if is_date and shift and present:
                text = dataset.value_text(spec, text, shift)
            m = miss.get(fid, "")
            if kind:
                long_label, wide_label = self._label(fid, spec, kind, text)
                wide += (text, wide_label, m)
            else:
                long_label = ""
                wide += (text, m)
            if present or m:
                long.append(f"{prefix}{fid},{text},{long_label},{m},no\n")
            if m:
                xml.append(f'{items[fid]} IsNull="Yes"><Annotation SeqNum="1"><Comment>missing: {m}</Comment>'
                           "</Annotation></ItemData>")
            elif text:
                xml.append(f'{items[fid]} Value="{text}"/>')
        for did in self.derived:
            v = vals.get(did)
            if v is None:
                wide.append("")
                continue
            wide.append(v)
            long.append(f"{prefix}{did},{v},,,yes\n")
            if v:
                xml.append(f'{items[did]} Value="{v}"/>')
        xml.append(odm.EVENT_CLOSE)
        return ",".join(wide) + "\n", "".join(long), len(long), "".join(xml)


def _one_pass(session, proto, by_id, opts, tmp: Path, counts: dict, *, odm_head: dict, tick) -> dict[str, Path]:
    """Read every record once, in export order, and write every per-form CSV, the long CSV and the ODM
    clinical data to spooled files at the same time (zip members can only be written one after another)."""
    plans = {f.id: _FormPlan(f, dataset.exported_fields(f, opts)) for f in proto.forms}
    paths = {fid: tmp / f"{fid}.csv" for fid in plans} | {"_long": tmp / "long.csv", "_odm": tmp / "odm.xml"}
    handles = {k: open(p, "w", encoding="utf-8", newline="", buffering=1 << 20) for k, p in paths.items()}  # noqa: SIM115
    bufs = {k: _Lines() for k in paths}
    try:
        writers = {k: csv.writer(bufs[k], lineterminator="\n") for k in paths if k != "_odm"}
        for fid, plan in plans.items():
            writers[fid].writerow(plan.header)
            counts[f"forms/{fid}"] = 0
        writers["_long"].writerow(["participant", "site", "visit", "form", "instance", "field", "value", "label",
                                   "missing", "derived"])
        odm.write_head(handles["_odm"], proto, **odm_head)
        long_buf, odm_buf = bufs["_long"], bufs["_odm"]
        current, values, n = None, 0, 0
        for form_id, r in dataset.records(session, proto, by_id):
            plan = plans.get(form_id)
            if plan is None:
                continue
            code = r.subject.code
            if code != current:
                if current is not None:
                    odm_buf.append(odm.SUBJECT_CLOSE)
                odm_buf.append(odm.subject_open(code))
                current = code
            out = plan.fast(r)
            if out is None:
                writers[form_id].writerow(_form_row(plan.form, plan.fields, r))
                for row in _long_rows(plan.form, plan.fields, r):
                    writers["_long"].writerow(row)
                    values += 1
                odm_buf.append(odm.event_xml(*_odm_event(plan.form, plan.fields, r)))
            else:
                bufs[form_id].append(out[0])
                long_buf.append(out[1])
                values += out[2]
                odm_buf.append(out[3])
            counts[f"forms/{form_id}"] += 1
            n += 1
            if n % 2000 == 0:
                _drain(bufs, handles)
                tick("records", 1, 4)
        if current is not None:
            odm_buf.append(odm.SUBJECT_CLOSE)
        _drain(bufs, handles)
        odm.write_tail(handles["_odm"])
        counts["values"] = values
    finally:
        for h in handles.values():
            h.close()
    return paths


def _drain(bufs: dict[str, _Lines], handles: dict) -> None:
    for k, buf in bufs.items():
        if buf:
            handles[k].write("".join(buf))
            buf.clear()


def _screening_rows(session, proto, opts):
    yield ["screening", "site", "screening_date", "outcome", "eligible", "failed_criteria", "decline_reason"]
    for sc in dataset.screenings(session, proto):
        failures = "; ".join(f"{f['criterion']}: {f['reason']}" for f in json.loads(sc.failures))
        yield [sc.id, sc.site_code, dataset.date_text(sc.screening_date, opts.shift(f"screening/{sc.id}")),
               sc.outcome.value, "yes" if sc.eligible else "no", failures, sc.decline_reason or ""]


def _query_rows(session, proto, by_id):
    yield ["query", "participant", "form", "instance", "field", "status", "automatic", "text", "opened_by",
           "answer", "answered_by", "closed_by"]
    for q, rec in dataset.query_rows(session, proto):
        yield [q.id, by_id[rec.participant_id].code, rec.form_id, rec.instance, q.field_id, q.status,
               "yes" if q.check_id else "no", q.text, q.opened_by, q.answer or "", q.answered_by or "",
               q.closed_by or ""]


def _checkpoints(out, session) -> None:
    for cp in audit.iter_checkpoints(session):
        out.write(json.dumps({"seq": cp["seq"], "ts": chainlib.utc_text(cp["ts"]), "body": cp["body"],
                              "signature": cp["signature"], "key_id": cp["key_id"]}, sort_keys=True) + "\n")
