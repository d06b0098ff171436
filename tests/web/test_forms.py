"""The WTForms factory: a protocol form drawn as HTML, submitted data read back, domain errors put in place."""

from __future__ import annotations

import re

import pytest
from flask import render_template_string
from werkzeug.datastructures import MultiDict

from tests.support import DEFAULT_PROTOCOL
from trialmgr.domain import crf
from trialmgr.protocols import load_protocol_file
from trialmgr.web.forms import form_class, sentence

PROTO = load_protocol_file(DEFAULT_PROTOCOL)
DRAW = '{% from "_forms.html" import domain_fields %}{{ domain_fields(form) }}'


def make(app, formdef, data=None, **flags):
    form = form_class(formdef, **flags)(formdata=MultiDict(data) if data is not None else None, meta={"csrf": False})
    return form, render_template_string(DRAW, form=form)


def test_every_field_is_labelled_and_typed(app):
    ae = PROTO.form("adverse_event")
    with app.test_request_context():
        form, html = make(app, ae)
    for spec in ae.fields:
        grouped = spec.type in ("yesno", "multichoice", "choice")
        if grouped:
            assert re.search(rf'<fieldset[^>]*id="{spec.id}"', html) and f"<legend>{spec.label}</legend>" in html
        else:
            assert f'<label for="{spec.id}">{spec.label}</label>' in html, spec.id
    # Every input, radio and checkbox has a label pointing at it.
    for input_id in re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', html):
        assert f'for="{input_id}"' in html, input_id
    assert 'type="date"' in html and 'type="checkbox"' in html and 'type="radio"' in html
    assert re.search(r'<input[^>]*id="term"[^>]*maxlength="200"', html) or re.search(
        r'<input[^>]*maxlength="200"[^>]*id="term"', html)
    assert "Leave blank while the event is ongoing." in html
    assert "Only when serious is yes; otherwise leave blank." in html
    assert "mild — Mild" in html
    assert "-missing" not in html and "Reason for change" not in html


def test_numbers_use_a_numeric_keyboard_and_show_their_unit(app):
    with app.test_request_context():
        _, html = make(app, PROTO.screening_form)
    assert re.search(r'<input[^>]*id="back_pain_months"[^>]*inputmode="numeric"', html)
    assert '<span class="unit" id="back_pain_months-unit">months</span>' in html
    assert 'aria-describedby="back_pain_months-unit"' in html


def test_missing_reasons_and_reason_for_change_are_optional_extras(app):
    pain = PROTO.form("pain")
    with app.test_request_context():
        form, html = make(app, pain, missing_codes=True, reason_for_change=True)
    first = pain.fields[0].id
    assert f'name="{first}-missing"' in html
    for code, words in crf.MISSING_CODES.items():
        assert f"{code} — {words}" in html
    assert 'name="change_reason"' in html and "Reason for change" in html


def test_submitted_data_in_domain_terms_and_errors_back_on_their_fields(app):
    ae = PROTO.form("adverse_event")
    data = [("term", " fall "), ("onset_date", "2026-01-05"), ("severity", "mild"), ("serious", "no"),
            ("serious_criteria", "death"), ("serious_criteria", "hospitalization"), ("relatedness", "not"),
            ("end_date-missing", "UNK"), ("change_reason", "typo")]
    with app.test_request_context(method="POST"):
        form, _ = make(app, ae, data, missing_codes=True, reason_for_change=True)
        answers = form.answers()
        assert answers["term"] == "fall" and answers["serious_criteria"] == ["death", "hospitalization"]
        assert "end_date" not in answers and form.missing() == {"end_date": "UNK"}
        assert form.reason_text() == "typo"
        result = crf.validate_form(ae, answers, missing=form.missing())
        # The condition is the domain's: ticked criteria on a non-serious event are refused, in words.
        assert result.errors["serious_criteria"].startswith("only applies when serious is yes")
        leftover = form.apply_errors({**result.errors, "not_a_field": "is odd"})
        html = render_template_string(DRAW, form=form)
    assert leftover == ["Not a field is odd."]
    block = html.split('id="serious_criteria"')[1].split("</fieldset>")[0]
    assert "Seriousness criteria only applies when serious is yes" in block
    assert html.count('checked') >= 3  # what was ticked stays ticked
    assert ("", "Not a field is odd.") in form.all_errors


def test_page_fields_may_not_clash_with_protocol_fields():
    from wtforms import StringField

    with pytest.raises(ValueError, match="sex"):
        form_class(PROTO.screening_form, extra={"sex": StringField("Sex")})


@pytest.mark.parametrize("label,message,expected", [
    ("Sex", "required", "Sex is required."),
    ("MMSE score", "must be between 0 and 30", "MMSE score must be between 0 and 30."),
    ("Date of birth", "is after the screening date (2026-01-01)",
     "Date of birth is after the screening date (2026-01-01)."),
    ("Site", "unknown or closed site 'XX'", "Site: unknown or closed site 'XX'."),
])
def test_messages_read_as_sentences(label, message, expected):
    assert sentence(label, message) == expected
