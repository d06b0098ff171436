"""WTForms classes built from a protocol form (a domain ``FormDef``), for rendering and carrying data only.

The WTForms object renders the fields, checks the CSRF token and carries what was submitted. It applies no
rule of its own: every value is judged by ``trialmgr.domain.crf`` (through the services), so a page and the
JSON API refuse the same input with the same words. The domain's ``ValidationFailed.errors`` are mapped back
onto the fields with ``apply_errors``.

Field names in the HTML are the protocol's field ids, so a submission reads like an API body. A field's
missing-reason select (case report forms only) is named ``<id>-missing``: ids never contain "-", so it cannot
clash with another field.

Without JavaScript every field is shown; a conditional field carries its condition as a hint and must be left
blank when the condition does not hold (the domain refuses a value there and says why).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flask_wtf import FlaskForm
from wtforms import Field, RadioField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.widgets import CheckboxInput, DateInput, ListWidget

from trialmgr.domain.crf import MISSING_CODES, MULTI_SEP, describe_condition, is_blank
from trialmgr.domain.protocol import FieldSpec, FormDef

try:  # WTForms >= 3.3 deprecates (value, label) tuples
    from wtforms.fields.choices import SelectChoice
except ImportError:  # pragma: no cover - older WTForms
    SelectChoice = None

MISSING_SUFFIX = "-missing"
REASON_FIELD = "change_reason"
# Text longer than this is entered in a text area rather than a one-line box.
TEXTAREA_FROM = 200


class MultiCheckboxField(SelectMultipleField):
    """A multichoice field as a list of checkboxes (usable with the keyboard and without JavaScript)."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def option(value: str, label: str) -> Any:
    """One choice of a select, radio or checkbox group, in the shape the installed WTForms prefers."""
    return SelectChoice(value, label) if SelectChoice is not None else (value, label)


def coded_label(code: str, label: str) -> str:
    """"F — Female": staff copy codes from paper CRFs, so the code is shown next to its words."""
    return label if code == label else f"{code} — {label}"


def _unbound(spec: FieldSpec) -> Any:
    label = spec.label
    kw: dict[str, Any] = {"name": spec.id, "description": spec.help or ""}
    t = spec.type
    if t in ("integer", "decimal"):
        # A text box, not type=number: browsers would reject "12,5" silently; the domain explains instead.
        mode = "numeric" if t == "integer" and (spec.min is None or spec.min >= 0) else "decimal"
        return StringField(label, render_kw={"inputmode": mode, "autocomplete": "off"}, **kw)
    if t == "choice":
        choices = [option(c.code, coded_label(c.code, c.label)) for c in spec.choices]
        if len(choices) <= 6:
            return RadioField(label, choices=choices, validate_choice=False, **kw)
        return SelectField(label, choices=[option("", "— choose —"), *choices], validate_choice=False, **kw)
    if t == "multichoice":
        return MultiCheckboxField(label, choices=[option(c.code, coded_label(c.code, c.label)) for c in spec.choices],
                                  validate_choice=False, **kw)
    if t == "date":
        return StringField(label, widget=DateInput(), **kw)
    if t == "yesno":
        return RadioField(label, choices=[option("yes", "Yes"), option("no", "No")], validate_choice=False, **kw)
    # text
    render = {"maxlength": spec.max_length} if spec.max_length else {}
    cls = TextAreaField if (spec.max_length or 0) > TEXTAREA_FROM else StringField
    return cls(label, render_kw=render, **kw)


def _missing_select(spec: FieldSpec) -> SelectField:
    choices = [option("", "— value given —"),
               *(option(code, f"{code} — {words}") for code, words in MISSING_CODES.items())]
    return SelectField(f"Reason {spec.label.lower()} is missing", choices=choices, validate_choice=False,
                       name=spec.id + MISSING_SUFFIX)


def _attr(field_id: str) -> str:
    # Python attribute of the field on the form class; "q_" keeps ids like "data" or "errors" from
    # shadowing the Form's own attributes.
    return "q_" + field_id


@dataclass(frozen=True)
class DomainField:
    """What a template needs to draw one protocol field."""

    spec: FieldSpec
    field: Field
    missing: Field | None
    condition: str | None  # "only when sex is Female; otherwise leave blank"
    unit: str | None
    help: str | None

    @property
    def grouped(self) -> bool:
        """Radio buttons and checkboxes: drawn as a fieldset with a legend."""
        return self.spec.type in ("yesno", "multichoice") or isinstance(self.field, RadioField)

    @property
    def errors(self) -> list[str]:
        return list(self.field.errors) + (list(self.missing.errors) if self.missing is not None else [])


class PageForm(FlaskForm):
    """A FlaskForm whose fields can carry the domain's error messages (``ValidationFailed.errors``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.form_errors_extra: list[str] = []

    def field_by_name(self, name: str) -> Field | None:
        """The bound field whose HTML name is ``name``."""
        for f in self:
            if f.name == name:
                return f
        return None

    def apply_errors(self, errors: Mapping[str, str], aliases: Mapping[str, str] | None = None) -> list[str]:
        """Put each domain error next to its field; return (and keep) the ones no field of this form shows.

        ``aliases`` maps an error key to a field name when the service's key differs (e.g. "reason").
        """
        leftover: list[str] = []
        aliases = aliases or {}
        for key, message in errors.items():
            field = self.field_by_name(aliases.get(key, key))
            if field is None or field.name == "csrf_token":
                leftover.append(sentence(key.replace("_", " ").capitalize(), message))
                continue
            field.errors = [*field.errors, sentence(field.label.text, message)]
        self.form_errors_extra.extend(leftover)
        return leftover

    def add_error(self, message: str) -> None:
        """A problem with the whole submission rather than one field."""
        self.form_errors_extra.append(message)

    @property
    def all_errors(self) -> list[tuple[str, str]]:
        """(field id, message) for the error summary at the top of the form."""
        out = [(f.id, e) for f in self for e in f.errors if f.name != "csrf_token"]
        return out + [("", e) for e in self.form_errors_extra]


class DomainForm(PageForm):
    """Base class of the generated forms: the protocol form it was made from, and its data in domain terms."""

    formdef: FormDef
    missing_codes: bool = False
    reason_for_change: bool = False

    # -- reading what was submitted ------------------------------------------------------------------
    def answers(self) -> dict[str, Any]:
        """{field id: raw submitted value}, blanks left out; ready for ``crf.validate_form`` or a service."""
        out: dict[str, Any] = {}
        for spec in self.formdef.fields:
            data = self[_attr(spec.id)].data
            if isinstance(data, str):
                data = data.strip()
            if not is_blank(data):
                out[spec.id] = data
        return out

    def missing(self) -> dict[str, str]:
        """{field id: missing-reason code} for the fields whose reason select was used."""
        if not self.missing_codes:
            return {}
        out = {}
        for spec in self.formdef.fields:
            code = (self[_attr(spec.id) + "_missing"].data or "").strip()
            if code:
                out[spec.id] = code
        return out

    def reason_text(self) -> str:
        """The reason for change typed in (blank when the form has no such box)."""
        return (self[REASON_FIELD].data or "").strip() if self.reason_for_change else ""

    # -- drawing -----------------------------------------------------------------------------------------
    def domain_fields(self) -> Iterator[DomainField]:
        for spec in self.formdef.fields:
            cond = None
            if spec.condition is not None:
                try:
                    target = self.formdef.field(spec.condition.field)
                except KeyError:
                    target = None
                cond = f"Only when {describe_condition(spec.condition, target)}; otherwise leave blank."
            missing = self[_attr(spec.id) + "_missing"] if self.missing_codes else None
            unit = spec.unit if spec.type in ("integer", "decimal") else None
            yield DomainField(spec, self[_attr(spec.id)], missing, cond, unit, spec.help)


_VERB_STARTS = ("is ", "are ", "must ", "only ", "needed ", "give ", "a reason ", "should ", "cannot ")


def sentence(label: str, message: str) -> str:
    """A domain message ("must be a whole number") as plain words next to its field."""
    message = message.strip()
    if message == "required":
        message = "is required"
    if message.startswith("required"):
        message = "is " + message
    text = f"{label} {message}" if message.startswith(_VERB_STARTS) else f"{label}: {message}"
    return text if text.endswith((".", "?", "!")) else text + "."


def form_class(
    formdef: FormDef,
    *,
    missing_codes: bool = False,
    reason_for_change: bool = False,
    extra: Mapping[str, Any] | None = None,
    base: type[DomainForm] = DomainForm,
) -> type[DomainForm]:
    """A form class for ``formdef``: one WTForms field per protocol field, in protocol order.

    ``missing_codes`` adds a missing-reason select (ND/RF/UNK) per field (case report forms; screening has
    none). ``reason_for_change`` adds the "reason for change" box that edits of saved values need.
    ``extra`` are further unbound fields (attribute name = HTML name) placed before the protocol's fields.
    """
    attrs: dict[str, Any] = {"formdef": formdef, "missing_codes": missing_codes,
                             "reason_for_change": reason_for_change}
    reserved = {"csrf_token", *(extra or {})}
    if reason_for_change:
        reserved.add(REASON_FIELD)
    clashes = [f.id for f in formdef.fields if f.id in reserved]
    if clashes:
        raise ValueError(f"form {formdef.id}: field id(s) {', '.join(clashes)} clash with the page's own fields")
    for name, unbound in (extra or {}).items():
        attrs[name] = unbound
    for spec in formdef.fields:
        attrs[_attr(spec.id)] = _unbound(spec)
        if missing_codes:
            attrs[_attr(spec.id) + "_missing"] = _missing_select(spec)
    if reason_for_change:
        attrs[REASON_FIELD] = TextAreaField(
            "Reason for change", render_kw={"maxlength": 500},
            description="Required when a saved value is changed; kept in the audit trail.")
    return type(f"{formdef.id.title().replace('_', '')}Form", (base,), attrs)


def fill(form: DomainForm, values: Mapping[str, Any], missing: Mapping[str, str] | None = None) -> None:
    """Pre-fill a form from stored canonical text ({id: text}, multichoice joined by ";")."""
    for spec in form.formdef.fields:
        text = values.get(spec.id)
        if text is None:
            continue
        field = form[_attr(spec.id)]
        field.data = [c for c in str(text).split(MULTI_SEP) if c] if spec.type == "multichoice" else text
    if missing and form.missing_codes:
        for fid, code in missing.items():
            if fid in form.formdef.field_ids:
                form[_attr(fid) + "_missing"].data = code


__all__ = ["MISSING_SUFFIX", "REASON_FIELD", "DomainField", "DomainForm", "PageForm", "coded_label", "fill",
           "form_class", "option", "sentence"]
