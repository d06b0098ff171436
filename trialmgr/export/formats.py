"""Loader scripts for R and Stata (variable and value labels, as REDCap's export syntax files do), the data
dictionary rows and the bundle's README."""

from __future__ import annotations

from trialmgr.domain.protocol import FieldSpec, FormDef, Protocol


def _codes(f: FieldSpec) -> list[tuple[str, str]]:
    if f.type == "yesno":
        return [("yes", "Yes"), ("no", "No")]
    return [(c.code, c.label) for c in f.choices]


def dictionary_rows(proto: Protocol, fields_of) -> list[list[str]]:
    rows = [["form", "variable", "label", "type", "unit", "min", "max", "precision", "required", "codes",
             "condition", "derived_from"]]
    for form in proto.forms:
        for f in fields_of(form):
            cond = f"{f.condition.field} {f.condition.op} {f.condition.value}" if f.condition else ""
            rows.append([form.id, f.id, f.label, f.type, f.unit or "", "" if f.min is None else str(f.min),
                         "" if f.max is None else str(f.max), "" if f.precision is None else str(f.precision),
                         "yes" if f.required else "no", "; ".join(f"{c}={lab}" for c, lab in _codes(f)), cond, ""])
        for d in form.derived:
            rows.append([form.id, d.id, d.label, "derived", d.unit or "", "", "", "", "no", "", "",
                         f"{d.method}({', '.join(d.inputs)})"])
    return rows


def _r_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def r_script(proto: Protocol, forms: list[FormDef], fields_of, arm_codes: list[tuple[str, str]]) -> str:
    lines = [
        f"# Load the {proto.id} export into R with variable and value labels.",
        "# Run from the folder the bundle was unzipped into: source('load.R')",
        "read_tm <- function(path) read.csv(path, colClasses = 'character', na.strings = '', check.names = FALSE)",
        "label_var <- function(df, var, label) { if (var %in% names(df)) attr(df[[var]], 'label') <- label; df }",
        "code_var <- function(df, var, codes, labels) {",
        "  if (var %in% names(df)) df[[var]] <- factor(df[[var]], levels = codes, labels = labels); df }",
        "num_var <- function(df, var) { if (var %in% names(df)) df[[var]] <- as.numeric(df[[var]]); df }",
        "date_var <- function(df, var) { if (var %in% names(df)) df[[var]] <- as.Date(df[[var]]); df }",
        "participants <- read_tm('participants.csv')",
        "participants <- date_var(participants, 'consent_date')",
    ]
    if arm_codes:
        lines.append("participants <- code_var(participants, 'arm', c(" + ", ".join(_r_str(c) for c, _ in arm_codes)
                     + "), c(" + ", ".join(_r_str(lab) for _, lab in arm_codes) + "))")
    lines.append("tm <- list(participants = participants)")
    for form in forms:
        lines.append(f"d <- read_tm('forms/{form.id}.csv')")
        for f in fields_of(form):
            lines.append(f"d <- label_var(d, {_r_str(f.id)}, {_r_str(f.label + (f' ({f.unit})' if f.unit else ''))})")
            if f.type in ("integer", "decimal"):
                lines.append(f"d <- num_var(d, {_r_str(f.id)})")
            elif f.type == "date":
                lines.append(f"d <- date_var(d, {_r_str(f.id)})")
            elif f.type in ("choice", "yesno"):
                codes = _codes(f)
                lines.append(f"d <- code_var(d, {_r_str(f.id)}, c(" + ", ".join(_r_str(c) for c, _ in codes)
                             + "), c(" + ", ".join(_r_str(lab) for _, lab in codes) + "))")
        for d in form.derived:
            lines.append(f"d <- label_var(d, {_r_str(d.id)}, {_r_str(d.label)})")
            lines.append(f"d <- num_var(d, {_r_str(d.id)})")
        lines.append(f"tm${form.id} <- d")
    lines.append("rm(d)")
    return "\n".join(lines) + "\n"


def _stata_str(text: str) -> str:
    return '`"' + text.replace('"', "'") + '"\''


def stata_script(proto: Protocol, forms: list[FormDef], fields_of) -> str:
    lines = [f"* Load the {proto.id} export into Stata with variable and value labels.",
             "* Run from the folder the bundle was unzipped into: do load.do", "version 14", "clear all"]
    for form in forms:
        lines += [f"* --- {form.title}", f'import delimited using "forms/{form.id}.csv", varnames(1) '
                  "stringcols(_all) bindquote(strict) encoding(utf-8) clear"]
        for f in fields_of(form):
            var = f.id[:32]
            lines.append(f"label variable {var} {_stata_str(f.label[:80])}")
            if f.type in ("integer", "decimal"):
                lines.append(f"destring {var}, replace")
            elif f.type in ("choice", "yesno"):
                lab = f"{form.id}_{f.id}"[:32]
                codes = _codes(f)
                lines.append(f"label define {lab} " + " ".join(f"{i} {_stata_str(label)}"
                                                                for i, (_c, label) in enumerate(codes, 1)))
                num = f"{var[:29]}_n"
                lines.append(f"generate int {num} = .")
                for i, (code, _label) in enumerate(codes, 1):
                    lines.append(f'replace {num} = {i} if {var} == "{code}"')
                lines.append(f"label values {num} {lab}")
                lines.append(f"label variable {num} {_stata_str((f.label + ' (coded)')[:80])}")
        for d in form.derived:
            lines.append(f"label variable {d.id[:32]} {_stata_str(d.label[:80])}")
            lines.append(f"destring {d.id[:32]}, replace")
        lines.append(f'save "{form.id}.dta", replace')
    return "\n".join(lines) + "\n"


def readme(proto: Protocol, manifest: dict) -> str:
    kind = manifest["kind"]
    banner = ("INTERIM EXPORT OF UNLOCKED DATA: values may still change; do not use for the final analysis.\n\n"
              if kind == "interim" else "")
    return f"""{banner}{proto.title}
{'=' * min(len(proto.title), 100)}

Trial {proto.id}, protocol version {proto.version} (protocol file sha256 {manifest['protocol_sha256']}).
Bundle kind: {kind}{' (data locked at ' + manifest['lock_time'] + ')' if manifest.get('lock_time') else ''}.
Blinded: {'yes: arms appear as neutral letters' if manifest['blinded'] else 'no: arms by their protocol codes'}.
De-identified: {'yes: direct identifiers dropped, dates shifted per participant by up to 30 days'
                if manifest['deidentified'] else 'no'}.
Exported by {manifest['exporter']} with trialmgr {manifest['software']}.

Provenance and integrity
------------------------
manifest.json lists every file with its SHA-256 and is signed with the instance's Ed25519 key (key id
{manifest['key_id']}; the public key is audit/public_key.pem, which you should compare with the one the data
manager published). audit/entries.jsonl is the trial's hash-chained audit trail and audit/checkpoints.jsonl the
signed checkpoints over it; the manifest names the checkpoint taken for this export. Check everything, with no
database and no trust in the server that produced it:

    trialmgr export verify THIS.zip --public-key KEY.pem

Files
-----
participants.csv      one row per participant: site, strata, randomization date, arm, status
forms/<form>.csv      one row per participant and visit (or per any-time form instance); coded values, their
                      labels in <field>_label and missing-value reasons in <field>_missing (ND not done,
                      RF refused, UNK unknown)
values_long.csv       every value, one per row
screening_log.csv     every screening with its outcome and failed criteria
adverse_events.csv, deviations.csv, queries.csv
data_dictionary.csv   variable, label, type, unit, range, codes
odm.xml               CDISC ODM 1.3.2: metadata and clinical data
protocol.toml         the protocol{' (arms masked as neutral letters)' if manifest['blinded'] else ''}
load.R, load.do       loaders for R and Stata with variable and value labels
"""
