"""CDISC ODM 1.3.2: study metadata and clinical data, streamed (validated in the tests against the official XSD)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import IO
from xml.sax.saxutils import XMLGenerator, escape, quoteattr

from trialmgr.domain.protocol import FieldSpec, FormDef, Protocol

NS = "http://www.cdisc.org/ns/odm/v1.3"
DATA_TYPES = {"integer": "integer", "decimal": "float", "choice": "text", "multichoice": "text", "date": "date",
              "yesno": "text", "text": "text"}
ANYTIME_EVENT = "SE.ANYTIME"
UNSCHEDULED_EVENT = "SE.UNSCHEDULED"


def _oid(*parts: str) -> str:
    return ".".join(p.replace(" ", "_") for p in parts)


class _Writer:
    def __init__(self, out: IO[str]) -> None:
        self.x = XMLGenerator(out, encoding="utf-8", short_empty_elements=True)

    def start(self, name: str, **attrs: str) -> None:
        self.x.startElement(name, {k.replace("__", ":"): v for k, v in attrs.items() if v is not None})

    def end(self, name: str) -> None:
        self.x.endElement(name)

    def leaf(self, name: str, text: str | None = None, **attrs: str) -> None:
        self.start(name, **attrs)
        if text is not None:
            self.x.characters(text)
        self.end(name)

    def translated(self, name: str, text: str) -> None:
        self.start(name)
        self.leaf("TranslatedText", text, xml__lang="en")
        self.end(name)


def _units(proto: Protocol, fields: Callable[[FormDef], list[FieldSpec]]) -> list[str]:
    units = set()
    for form in proto.forms:
        for f in fields(form):
            if f.unit:
                units.add(f.unit)
        for d in form.derived:
            if d.unit:
                units.add(d.unit)
    return sorted(units)


def write(out: IO[str], proto: Protocol, *, file_oid: str, created: str, fields: Callable[[FormDef], list[FieldSpec]],
          subjects: Iterable[tuple[str, list[tuple[str, str, int, list[tuple[str, str | None, str | None]]]]]],
          description: str) -> None:
    """The whole document. subjects: (subject key, [(event OID, form id, repeat key, [(item, value, missing)])])."""
    write_head(out, proto, file_oid=file_oid, created=created, fields=fields, description=description)
    for key, events in subjects:
        out.write(subject_xml(key, events))
    write_tail(out)


def write_head(out: IO[str], proto: Protocol, *, file_oid: str, created: str,
               fields: Callable[[FormDef], list[FieldSpec]], description: str) -> None:
    """The declaration, the study's metadata and the opening ClinicalData tag."""
    w = _Writer(out)
    w.x.startDocument()
    w.start("ODM", xmlns=NS, FileType="Snapshot", FileOID=file_oid, CreationDateTime=created, ODMVersion="1.3.2",
            Granularity="All", Description=description)
    study = _oid("ST", proto.id)
    mdv = _oid("MDV", proto.id, proto.version)
    w.start("Study", OID=study)
    w.start("GlobalVariables")
    w.leaf("StudyName", proto.title)
    w.leaf("StudyDescription", description)
    w.leaf("ProtocolName", f"{proto.id} version {proto.version}")
    w.end("GlobalVariables")
    units = _units(proto, fields)
    if units:
        w.start("BasicDefinitions")
        for u in units:
            w.start("MeasurementUnit", OID=_oid("MU", u), Name=u)
            w.translated("Symbol", u)
            w.end("MeasurementUnit")
        w.end("BasicDefinitions")
    w.start("MetaDataVersion", OID=mdv, Name=f"{proto.id} protocol {proto.version}")
    w.start("Protocol")
    events = [(_oid("SE", v.code), v.label, v.forms, "Scheduled", "No") for v in proto.visits]
    visit_forms = tuple(f.id for f in proto.forms if f.kind == "visit")
    events.append((UNSCHEDULED_EVENT, "Unscheduled visit", visit_forms, "Unscheduled", "Yes"))
    events.append((ANYTIME_EVENT, "Any time", tuple(f.id for f in proto.forms if f.kind == "anytime"), "Common",
                   "Yes"))
    for i, (oid, _label, _forms, _type, _rep) in enumerate(events, 1):
        w.leaf("StudyEventRef", StudyEventOID=oid, OrderNumber=str(i), Mandatory="No")
    w.end("Protocol")
    for oid, label, forms, kind, repeating in events:
        w.start("StudyEventDef", OID=oid, Name=label, Repeating=repeating, Type=kind)
        for j, f in enumerate(forms, 1):
            w.leaf("FormRef", FormOID=_oid("F", f), OrderNumber=str(j), Mandatory="No")
        w.end("StudyEventDef")
    for form in proto.forms:
        w.start("FormDef", OID=_oid("F", form.id), Name=form.title, Repeating="Yes" if form.kind == "anytime" else "No")
        w.leaf("ItemGroupRef", ItemGroupOID=_oid("IG", form.id), Mandatory="Yes")
        w.end("FormDef")
    for form in proto.forms:
        w.start("ItemGroupDef", OID=_oid("IG", form.id), Name=form.title, Repeating="No")
        n = 0
        for f in fields(form):
            n += 1
            w.leaf("ItemRef", ItemOID=_oid("IT", form.id, f.id), OrderNumber=str(n),
                   Mandatory="Yes" if f.required and f.condition is None else "No")
        for d in form.derived:
            n += 1
            w.leaf("ItemRef", ItemOID=_oid("IT", form.id, d.id), OrderNumber=str(n), Mandatory="No")
        w.end("ItemGroupDef")
    for form in proto.forms:
        for f in fields(form):
            w.start("ItemDef", OID=_oid("IT", form.id, f.id), Name=f.id, DataType=DATA_TYPES[f.type],
                    Length=str(f.max_length) if f.type == "text" and f.max_length else None,
                    SignificantDigits=str(f.precision) if f.type == "decimal" and f.precision is not None else None)
            w.translated("Question", f.label)
            if f.unit:
                w.leaf("MeasurementUnitRef", MeasurementUnitOID=_oid("MU", f.unit))
            for comparator, bound in (("GE", f.min), ("LE", f.max)):
                if bound is not None and f.type in ("integer", "decimal"):
                    w.start("RangeCheck", Comparator=comparator, SoftHard="Hard")
                    w.leaf("CheckValue", format(bound, "f") if not isinstance(bound, int) else str(bound))
                    w.end("RangeCheck")
            if f.type in ("choice", "multichoice", "yesno"):
                w.leaf("CodeListRef", CodeListOID=_oid("CL", form.id, f.id))
            w.end("ItemDef")
        for d in form.derived:
            w.start("ItemDef", OID=_oid("IT", form.id, d.id), Name=d.id,
                    DataType="integer" if d.method in ("age_years", "count_true") else "float")
            w.translated("Question", f"{d.label} (derived: {d.method})")
            if d.unit:
                w.leaf("MeasurementUnitRef", MeasurementUnitOID=_oid("MU", d.unit))
            w.end("ItemDef")
    for form in proto.forms:
        for f in fields(form):
            if f.type not in ("choice", "multichoice", "yesno"):
                continue
            w.start("CodeList", OID=_oid("CL", form.id, f.id), Name=f"{form.id}.{f.id}", DataType="text")
            items = [(c.code, c.label) for c in f.choices] if f.type != "yesno" else [("yes", "Yes"), ("no", "No")]
            for code, label in items:
                w.start("CodeListItem", CodedValue=code)
                w.translated("Decode", label)
                w.end("CodeListItem")
            w.end("CodeList")
    w.end("MetaDataVersion")
    w.end("Study")
    w.start("ClinicalData", StudyOID=study, MetaDataVersionOID=mdv)
    w.x.characters("\n")  # closes the pending start tag; clinical data are written as text from here on


def write_tail(out: IO[str]) -> None:
    out.write("</ClinicalData></ODM>")


_ITEM_OIDS: dict[tuple[str, str], str] = {}


def _item_attr(form_id: str, item_id: str) -> str:
    attr = _ITEM_OIDS.get((form_id, item_id))
    if attr is None:
        attr = _ITEM_OIDS[(form_id, item_id)] = f"ItemOID={quoteattr(_oid('IT', form_id, item_id))}"
    return attr


def item_open(form_id: str, item_id: str) -> str:
    """``<ItemData ItemOID="..."`` for one item (the start of every ItemData element of that item)."""
    return f"<ItemData {_item_attr(form_id, item_id)}"


EVENT_CLOSE = "</ItemGroupData></FormData></StudyEventData>"


def event_xml(event_oid: str, form_id: str, repeat: int, items: list[tuple[str, str | None, str | None]]) -> str:
    """One StudyEventData element (one form of one visit) as text."""
    repeating = event_oid in (ANYTIME_EVENT, UNSCHEDULED_EVENT)
    parts = [f"<StudyEventData StudyEventOID={quoteattr(event_oid)}"
             + (f' StudyEventRepeatKey="{int(repeat)}">' if repeating else ">"),
             f"<FormData FormOID={quoteattr(_oid('F', form_id))}"
             + (f' FormRepeatKey="{int(repeat)}">' if event_oid == ANYTIME_EVENT else ">"),
             f"<ItemGroupData ItemGroupOID={quoteattr(_oid('IG', form_id))}>"]
    for item_id, value, missing in items:
        if missing:
            parts.append(f'<ItemData {_item_attr(form_id, item_id)} IsNull="Yes"><Annotation SeqNum="1">'
                         f"<Comment>missing: {escape(missing)}</Comment></Annotation></ItemData>")
        elif value not in (None, ""):
            parts.append(f"<ItemData {_item_attr(form_id, item_id)} Value={quoteattr(value)}/>")
    parts.append(EVENT_CLOSE)
    return "".join(parts)


def subject_open(key: str) -> str:
    return f"<SubjectData SubjectKey={quoteattr(key)}>"


SUBJECT_CLOSE = "</SubjectData>"


def subject_xml(key: str, events: list[tuple[str, str, int, list[tuple[str, str | None, str | None]]]]) -> str:
    """One SubjectData element as text. Written directly rather than through XMLGenerator: the clinical data
    are millions of elements, and building each with the SAX generator took half the export's time."""
    return subject_open(key) + "".join(event_xml(*e) for e in events) + SUBJECT_CLOSE
