"""Trial reports: the CONSORT flow diagram and enrollment over time, as a page and as SVG files to download.

Blinded roles (protocol.is_blinded) see the arms pooled into one column (services.reports.consort says why), in
the diagram, its text equivalent and the downloaded file alike.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template
from markupsafe import Markup

from trialmgr import clock
from trialmgr.domain.errors import DomainError
from trialmgr.domain.vocab import Role
from trialmgr.services import reports
from trialmgr.web import charts
from trialmgr.web.access import allow
from trialmgr.web.db import read_session
from trialmgr.web.enrollment import blinded, domain_error_page, page_context

bp = Blueprint("reports", __name__, url_prefix="/t/<trial>/reports")
bp.register_error_handler(DomainError, domain_error_page)

READERS = (Role.INVESTIGATOR, Role.MONITOR, Role.ADMIN)


def consort_for(trial: str) -> reports.Consort:
    """The CONSORT numbers as the acting role may see them."""
    proto = page_context(trial)["protocol"]
    return reports.consort(read_session(), trial, blinded=blinded(proto))


def inline(svg: str) -> Markup:
    """An SVG drawing for a page. Every text in it was escaped when it was drawn (web.charts)."""
    return Markup(svg)  # noqa: S704


def _download(svg: str, filename: str) -> Response:
    resp = Response(charts.XML_DECL + svg, mimetype="image/svg+xml")
    resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return resp


@bp.get("/")
@allow(*READERS)
def index(trial: str):
    c = consort_for(trial)
    series = reports.enrollment_over_time(read_session(), trial)
    today = clock.today()
    return render_template(
        "reports/index.html", consort=c, consort_svg=inline(charts.consort_svg(c)),
        consort_text=charts.consort_description(c), series=series,
        enrollment_svg=inline(charts.enrollment_svg(series, today=today)),
        enrollment_text=charts.enrollment_description(series, today), **page_context(trial))


@bp.get("/consort.svg")
@allow(*READERS)
def consort_svg(trial: str):
    return _download(charts.consort_svg(consort_for(trial)), f"{trial}-consort.svg")


@bp.get("/enrollment.svg")
@allow(*READERS)
def enrollment_svg(trial: str):
    series = reports.enrollment_over_time(read_session(), trial)
    return _download(charts.enrollment_svg(series, today=clock.today()), f"{trial}-enrollment.svg")
