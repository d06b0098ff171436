"""The protocol checker: one test per kind of mistake, all mistakes listed at once, shipped protocols."""

from __future__ import annotations

import copy
import hashlib
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialmgr.domain.errors import DomainError, ProtocolInvalid
from trialmgr.domain.protocol import ROLES, Protocol, parse_protocol
from trialmgr.protocols import default_protocol_path, load_protocol_file, protocol_dir


def minimal() -> dict[str, Any]:
    """A small valid protocol; each test breaks one thing in it."""
    return {
        "id": "mini",
        "title": "Mini trial",
        "version": "1.0",
        "target_enrollment": 20,
        "consent_version": "1.0",
        "blinded_roles": ["assessor"],
        "sites": [{"code": "DE", "name": "Newark"}, {"code": "PA", "name": "Pittsburgh"}],
        "arms": [{"code": "A", "label": "Arm A", "ratio": 1}, {"code": "B", "label": "Arm B", "ratio": 1}],
        "randomization": {"block_sizes": [2, 4], "strata": ["site", "sex"], "slots_per_stratum": 10},
        "screening": {
            "fields": [
                {"id": "sex", "label": "Sex", "type": "choice",
                 "choices": [{"code": "F", "label": "Female"}, {"code": "M", "label": "Male"}]},
                {"id": "dob", "label": "Date of birth", "type": "date", "identifier": True},
                {"id": "pain_months", "label": "Back pain", "type": "integer", "min": 0, "max": 600},
                {"id": "smoker", "label": "Smoker", "type": "yesno"},
            ],
            "derived": [{"id": "age", "label": "Age", "method": "age_years", "inputs": ["dob"]}],
        },
        "eligibility": [
            {"id": "age_65", "kind": "inclusion", "text": "Age 65 or older", "field": "age", "op": ">=", "value": 65},
            {"id": "pain_6m", "kind": "inclusion", "text": "Pain 6 months", "field": "pain_months", "op": ">=",
             "value": 6},
        ],
        "visits": [
            {"code": "BL", "label": "Baseline", "day": 0, "window": [-14, 0], "forms": ["pain"]},
            {"code": "W4", "label": "Week 4", "day": 28, "window": [-7, 7], "forms": ["pain"]},
        ],
        "forms": [
            {"id": "pain", "title": "Pain", "outcome": True, "fields": [
                {"id": "back", "label": "Back pain", "type": "integer", "min": 0, "max": 10},
                {"id": "hip", "label": "Hip pain", "type": "integer", "min": 0, "max": 10},
                {"id": "notes", "label": "Notes", "type": "text", "required": False},
            ], "derived": [{"id": "total", "label": "Total", "method": "sum", "inputs": ["back", "hip"]}]},
            {"id": "ae", "title": "Adverse event", "kind": "anytime", "fields": [
                {"id": "onset", "label": "Onset", "type": "date"},
                {"id": "end", "label": "End", "type": "date", "required": False},
                {"id": "serious", "label": "Serious", "type": "yesno"},
                {"id": "criteria", "label": "Criteria", "type": "multichoice",
                 "condition": {"field": "serious", "op": "==", "value": True},
                 "choices": [{"code": "death", "label": "Death"}, {"code": "hosp", "label": "Hospital"}]},
            ], "checks": [{"id": "end_after", "left": "end", "op": ">=", "right": "onset", "message": "too early"}]},
        ],
    }


def errors_of(data: Any) -> list[str]:
    with pytest.raises(ProtocolInvalid) as info:
        parse_protocol(data)
    return info.value.errors


def test_minimal_protocol_parses() -> None:
    p = parse_protocol(minimal())
    assert isinstance(p, Protocol)
    assert p.form("ae").field("criteria").condition is not None
    assert p.randomization.block_weights == (0.5, 0.5)
    assert not p.form("ae").field("onset").future  # dates describe the past unless the protocol says otherwise
    data = minimal()
    data["forms"][1]["fields"][1]["future"] = True
    assert parse_protocol(data).form("ae").field("end").future


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target: Any = d
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return mutate


_DELETE = object()


def _both(*mutators: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        for m in mutators:
            m(d)
    return mutate

CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("unknown top key", _set("foo", 1), "unknown key 'foo'"),
    ("unknown nested key", _set("arms/0/colour", "red"), "arms[0]: unknown key 'colour'"),
    ("unknown field key", _set("forms/0/fields/0/maximum", 3), "forms[0].fields[0]: unknown key 'maximum'"),
    ("unknown randomization key", _set("randomization/seed", 3), "randomization: unknown key 'seed'"),
    ("wrong type int", _set("target_enrollment", "184"), "target_enrollment: expected integer, got string"),
    ("wrong type bool as int", _set("arms/0/ratio", True), "arms[0].ratio: expected integer, got boolean"),
    ("wrong type string", _set("title", 3), "title: expected string, got integer"),
    ("wrong type table", _set("randomization", [1]), "randomization: expected table, got array"),
    ("missing title", _set("title", _DELETE), "title: required"),
    ("arm without ratio", _set("arms/0/ratio", _DELETE), "arms[0].ratio: required"),
    ("zero ratio", _set("arms/0/ratio", 0), "arms[0].ratio: must be at least 1, got 0"),
    ("no arms", _set("arms", []), "arms: needs at least two arms, got 0"),
    ("one arm", _set("arms", [{"code": "A", "label": "A", "ratio": 1}]), "arms: needs at least two arms, got 1"),
    ("duplicate arm", _set("arms/1/code", "A"), "arms[1].code: duplicate arm code 'A'"),
    ("bad arm code", _set("arms/1/code", "b"), "arms[1].code: 'b' is not a valid arm code (A-Z, 0-9, _)"),
    ("bad site code", _set("sites/0/code", "Delaware"),
     "sites[0].code: 'Delaware' is not a valid site code (2-4 upper-case letters)"),
    ("duplicate site", _set("sites/1/code", "DE"), "sites[1].code: duplicate site code 'DE'"),
    ("block size vs ratio", _set("randomization/block_sizes", [2, 3]),
     "randomization.block_sizes: 3 is not a multiple of the ratio sum 2"),
    ("duplicate block size", _set("randomization/block_sizes", [2, 2]),
     "randomization.block_sizes[1]: duplicate block size 2"),
    ("weights wrong length", _set("randomization/block_weights", [1.0]),
     "randomization.block_weights: has 1 weights for 2 block sizes"),
    ("weights not summing to 1", _set("randomization/block_weights", [0.5, 0.4]),
     "randomization.block_weights: probabilities sum to 0.9, not 1"),
    ("negative weight", _set("randomization/block_weights", [1.5, -0.5]),
     "randomization.block_weights[1]: must be greater than 0, got -0.5"),
    ("unknown randomization method", _set("randomization/method", "urn"),
     "randomization.method: unknown method 'urn' (only permuted_blocks)"),
    ("stratum unknown field", _set("randomization/strata", ["site", "sexx"]),
     "randomization.strata[1]: unknown screening field 'sexx'; strata are 'site' or choice / yes-no screening fields"),
    ("stratum on a number field", _set("randomization/strata", ["pain_months"]),
     "randomization.strata[0]: 'pain_months' is a integer field; strata need a choice or yes/no field"),
    ("stratum on derived", _set("randomization/strata", ["age"]),
     "randomization.strata[0]: is a derived score 'age'; strata are 'site' or choice / yes-no screening fields"),
    ("slots below block", _both(_set("randomization/slots_per_stratum", 3), _set("target_enrollment", 10)),
     "randomization.slots_per_stratum: must be at least the largest block size 4"),
    ("slots below target", _set("target_enrollment", 500),
     "randomization.slots_per_stratum: 4 strata x 10 slots = 40 is less than target_enrollment 500"),
    ("window start after end", _set("visits/1/window", [7, -7]), "visits[1].window: start after end"),
    ("window misses day", _set("visits/1/window", [1, 7]),
     "visits[1].window: must include the visit day (start <= 0 <= end), got [1, 7]"),
    ("window shape", _set("visits/1/window", [-7]),
     "visits[1].window: expected [start, end] as two integers, got [-7]"),
    ("visit days out of order", _set("visits/1/day", 0),
     "visits[1].day: must be after the previous visit BL (day 0)"),
    ("overlapping windows", _set("visits/1/window", [-28, 7]),
     "visits[1].window: overlaps the window of the previous visit BL"),
    ("duplicate visit", _set("visits/1/code", "BL"), "visits[1].code: duplicate visit code 'BL'"),
    ("visit unknown form", _set("visits/0/forms", ["painn"]), "visits[0].forms[0]: unknown form 'painn'"),
    ("visit anytime form", _set("visits/0/forms", ["ae"]),
     "visits[0].forms[0]: 'ae' is an any-time form and cannot be scheduled at a visit"),
    ("criterion unknown field", _set("eligibility/1/field", "agee"),
     "eligibility[1].field: unknown screening field 'agee'"),
    ("criterion value type", _set("eligibility/0/value", "65"), "eligibility[0].value: expected number, got string"),
    ("criterion value range", _set("eligibility/1/value", 601), "eligibility[1].value: must be between 0 and 600"),
    ("criterion unknown op", _set("eligibility/0/op", "=>"),
     "eligibility[0].op: unknown operator '=>' (one of ==, !=, <, <=, >, >=, in, not_in)"),
    ("criterion kind", _set("eligibility/0/kind", "include"),
     "eligibility[0].kind: unknown kind 'include' (inclusion or exclusion)"),
    ("duplicate criterion", _set("eligibility/1/id", "age_65"), "eligibility[1].id: duplicate id 'age_65'"),
    ("blinded role", _set("blinded_roles", ["assessor", "statistician"]),
     "blinded_roles[1]: 'statistician' is not a role (one of " + ", ".join(ROLES) + ")"),
    ("unknown field type", _set("forms/0/fields/0/type", "number"),
     "forms[0].fields[0].type: unknown type 'number' "
     "(one of integer, decimal, choice, multichoice, date, yesno, text)"),
    ("min above max", _set("forms/0/fields/0/min", 11), "forms[0].fields[0].min: min 11 is greater than max 10"),
    ("min on a date", _set("forms/1/fields/0/min", 1),
     "forms[1].fields[0].min: only integer and decimal fields have min/max"),
    ("decimal min on integer", _set("forms/0/fields/0/min", 0.5),
     "forms[0].fields[0].min: expected integer, got float"),
    ("duplicate field", _set("forms/0/fields/2/id", "back"), "forms[0].fields[2].id: duplicate id 'back'"),
    ("bad field id", _set("forms/0/fields/2/id", "Hip Pain"),
     "forms[0].fields[2].id: 'Hip Pain' is not a valid id (lower-case letters, digits and _, starting with a letter)"),
    ("duplicate form", _set("forms/1/id", "pain"), "forms[1].id: duplicate id 'pain'"),
    ("form kind", _set("forms/1/kind", "sometimes"), "forms[1].kind: unknown kind 'sometimes' (one of visit, anytime)"),
    ("form without fields", _both(_set("forms/0/fields", []), _set("forms/0/derived", [])),
     "forms[0].fields: needs at least one field"),
    ("choice without choices", _set("screening/fields/0/choices", _DELETE),
     "screening.fields[0].choices: required for a choice field"),
    ("choice with empty choices", _set("screening/fields/0/choices", []),
     "screening.fields[0].choices: a choice field needs at least one choice"),
    ("duplicate choice code", _set("screening/fields/0/choices/1/code", "F"),
     "screening.fields[0].choices[1].code: duplicate code 'F'"),
    ("choices on an integer", _set("forms/0/fields/0/choices", [{"code": "1", "label": "one"}]),
     "forms[0].fields[0].choices: only choice and multichoice fields have choices"),
    ("bad choice code", _set("screening/fields/0/choices/1/code", "M;F"),
     "screening.fields[0].choices[1].code: 'M;F' is not a valid code "
     "(letters, digits, _ . + -, at most 32 characters)"),
    ("max_length on integer", _set("forms/0/fields/0/max_length", 5),
     "forms[0].fields[0].max_length: only text fields have a max_length"),
    ("future on an integer", _set("forms/0/fields/0/future", True),
     "forms[0].fields[0].future: only date fields have future"),
    ("condition unknown field", _set("forms/1/fields/3/condition/field", "seriouss"),
     "forms[1].fields[3].condition.field: unknown field 'seriouss' "
     "(a condition must name an earlier field of the same form)"),
    ("condition value type", _set("forms/1/fields/3/condition/value", "yes"),
     "forms[1].fields[3].condition.value: expected boolean, got string"),
    ("condition op on yes/no", _set("forms/1/fields/3/condition/op", ">"),
     "forms[1].fields[3].condition.value: operator '>' needs a number or date field; 'serious' is yesno"),
    ("derived unknown method", _set("forms/0/derived/0/method", "median"),
     "forms[0].derived[0].method: unknown method 'median' (one of age_years, sum, mean, min, max, ratio, "
     "count_true, odi_percent, hoos_score, speed)"),
    ("derived unknown input", _set("forms/0/derived/0/inputs", ["back", "knee"]),
     "forms[0].derived[0].inputs[1]: unknown input 'knee' (a field or an earlier derived score of this form)"),
    ("derived input kind", _set("screening/derived/0/inputs", ["pain_months"]),
     "screening.derived[0].inputs[0]: 'pain_months' is a integer field; method 'age_years' needs date inputs"),
    ("derived unknown param", _set("forms/0/derived/0/params", {"places": 2}),
     "forms[0].derived[0].params: unknown key 'places'"),
    ("derived id clash", _set("forms/0/derived/0/id", "back"), "forms[0].derived[0].id: 'back' is already a field id"),
    ("check unknown field", _set("forms/1/checks/0/left", "ended"), "forms[1].checks[0].left: unknown field 'ended'"),
    ("check incompatible", _set("forms/1/checks/0/right", "serious"),
     "forms[1].checks[0]: cannot compare date field 'end' with yesno field 'serious'"),
    ("reserved form id", _set("forms/1/id", "screening"),
     "forms[1].id: 'screening' is reserved for the screening questions"),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_mistake_is_reported_with_its_path(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    data = minimal()
    mutate(data)
    assert errors_of(data) == [expected]


def test_ratio_arity_is_checked() -> None:
    data = minimal()
    data["forms"][0]["derived"][0] = {"id": "r", "label": "R", "method": "ratio", "inputs": ["back"]}
    assert errors_of(data) == ["forms[0].derived[0].inputs: method 'ratio' needs exactly 2 input(s), got 1"]


def test_speed_needs_its_distance() -> None:
    data = minimal()
    data["forms"][0]["derived"][0] = {"id": "v", "label": "V", "method": "speed", "inputs": ["back"]}
    assert errors_of(data) == ["forms[0].derived[0].params.distance_m: required by method 'speed'"]


def test_not_a_table_at_all() -> None:
    assert errors_of([1, 2]) == ["expected table, got array"]


def test_every_mistake_is_listed_not_only_the_first() -> None:
    data = minimal()
    data["foo"] = 1
    data["arms"][0].pop("ratio")
    data["visits"][1]["window"] = [5, -3]
    data["eligibility"][1]["field"] = "agee"
    data["forms"][0]["fields"][0]["min"] = 20
    data["blinded_roles"] = ["boss"]
    data["target_enrollment"] = "ten"
    data["randomization"]["strata"] = ["site", "sexx"]
    errors = errors_of(data)
    assert len(errors) == 8
    assert "arms[0].ratio: required" in errors
    assert "visits[1].window: start after end" in errors
    assert "eligibility[1].field: unknown screening field 'agee'" in errors


def test_every_mistake_within_one_field_is_listed() -> None:
    data = minimal()
    field = data["forms"][1]["fields"][3]
    del field["label"]
    field["condition"]["op"] = "~"
    field["choices"][1]["code"] = "death"
    assert errors_of(data) == [
        "forms[1].fields[3].label: required",
        "forms[1].fields[3].choices[1].code: duplicate code 'death'",
        "forms[1].fields[3].condition.op: unknown operator '~' (one of ==, !=, <, <=, >, >=, in, not_in)",
    ]


def test_error_message_names_the_source() -> None:
    with pytest.raises(ProtocolInvalid) as info:
        parse_protocol({"id": "x"}, source="trial.toml")
    assert info.value.source == "trial.toml"
    assert str(info.value).startswith("trial.toml: protocol refused")
    assert isinstance(info.value, DomainError) and info.value.code == "protocol_invalid"


# -- the shipped protocols ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default() -> Protocol:
    return load_protocol_file(default_protocol_path())


def test_shipped_protocols_parse() -> None:
    paths = sorted(protocol_dir().glob("*.toml"))
    assert {p.name for p in paths} >= {"hip-pt-clbp.toml", "mash.toml"}
    for path in paths:
        protocol = load_protocol_file(path)
        assert protocol.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_protocol_shape(default: Protocol) -> None:
    assert default.id == "hip-pt-clbp" and default.target_enrollment == 184
    assert [a.code for a in default.arms] == ["HIP", "SPINE"] and default.ratio_sum == 2
    assert [s.code for s in default.sites] == ["DE", "PA", "NC"]
    assert default.randomization.block_sizes == (2, 4, 6)
    assert sum(default.randomization.block_weights) == pytest.approx(1)
    assert [v.code for v in default.visits] == ["BL", "W4", "W8", "W12", "M6"]
    assert default.visit("W12").forms == ("pain", "qbpds", "performance", "hip_impairment", "pros")
    assert {f.id for f in default.outcome_forms} == {"pain", "qbpds", "performance", "hip_impairment", "pros"}
    assert {f.id for f in default.anytime_forms} == {"adverse_event", "deviation", "withdrawal"}
    assert len(default.form("qbpds").fields) == 20
    assert default.screening_field("date_of_birth").identifier
    assert default.is_blinded("assessor") and default.is_blinded("monitor")
    assert not default.is_blinded("coordinator")


def test_documented_example_parses() -> None:
    doc = (protocol_dir().parent / "docs" / "protocol-format.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    protocol = parse_protocol(tomllib.loads(example))
    assert protocol.strata_keys() == ["DE|F", "DE|M"]


def test_mash_differs_where_the_trial_did() -> None:
    mash = load_protocol_file(protocol_dir() / "mash.toml")
    assert mash.target_enrollment == 180
    assert [v.code for v in mash.visits] == ["BL", "W8", "M6"]
    assert {c.id for c in mash.eligibility} >= {"age_60", "age_85", "hip_pain", "hip_weakness"}
    assert mash.blinded_roles == frozenset({"assessor"})


def test_strata(default: Protocol) -> None:
    assert default.strata_factors() == [("site", ("DE", "PA", "NC")), ("sex", ("F", "M"))]
    assert default.strata_keys() == ["DE|F", "DE|M", "PA|F", "PA|M", "NC|F", "NC|M"]
    assert default.stratum_key({"site": "PA", "sex": "M"}) == "PA|M"
    with pytest.raises(ValueError, match="sex: 'X'"):
        default.stratum_key({"site": "PA", "sex": "X"})
    with pytest.raises(KeyError):
        default.stratum_key({"site": "PA"})


def test_yes_no_strata_and_unstratified_designs() -> None:
    data = minimal()
    data["randomization"]["strata"] = ["smoker"]
    p = parse_protocol(data)
    assert p.strata_keys() == ["yes", "no"]
    assert p.stratum_key({"smoker": True}) == "yes"
    data["randomization"]["strata"] = []
    data["randomization"]["slots_per_stratum"] = 20  # one stratum must hold the whole target
    p = parse_protocol(data)
    assert p.strata_keys() == ["all"] and p.stratum_key({}) == "all"


def test_weights_are_normalised() -> None:
    data = minimal()
    data["randomization"]["block_weights"] = [0.25, 0.75]
    assert parse_protocol(data).randomization.block_weights == (0.25, 0.75)


def test_lookups_raise_key_error(default: Protocol) -> None:
    for lookup in (default.form, default.visit, default.arm, default.site):
        with pytest.raises(KeyError):
            lookup("nope")
    assert default.arm("HIP").label == "Hip-focused PT"
    assert default.site("NC").code == "NC"


# -- the file reader ------------------------------------------------------------------------------------


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('id = "x"\ntitle = \n')
    with pytest.raises(ProtocolInvalid) as info:
        load_protocol_file(path)
    (error,) = info.value.errors
    assert error.startswith(f"{path}: line 2, column 9: invalid TOML")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ProtocolInvalid) as info:
        load_protocol_file(tmp_path / "missing.toml")
    assert info.value.errors == [f"{tmp_path / 'missing.toml'}: cannot read file: No such file or directory"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'title = "caf\xe9"\n')
    with pytest.raises(ProtocolInvalid, match="not UTF-8"):
        load_protocol_file(path)


def test_file_with_several_mistakes_lists_them_all(tmp_path: Path) -> None:
    text = default_protocol_path().read_text()
    text = text.replace("ratio = 1\n", "", 1).replace("window = [-7, 7]", "window = [7, -7]")
    text = text.replace('strata = ["site", "sex"]', 'strata = ["site", "gender"]').replace(
        'target_enrollment = 184', 'target_enrollment = "184"\nfoo = 1')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProtocolInvalid) as info:
        load_protocol_file(path)
    assert sorted(info.value.errors) == sorted([
        "unknown key 'foo'",
        "target_enrollment: expected integer, got string",
        "arms[0].ratio: required",
        "randomization.strata[1]: unknown screening field 'gender'; strata are 'site' or choice / yes-no "
        "screening fields",
        "visits[1].window: start after end",
    ])
    assert str(path) in str(info.value)


# -- robustness: whatever the input, the only failure is ProtocolInvalid -------------------------------

_DEFAULT_DATA = tomllib.loads(default_protocol_path().read_text())
_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 1000), st.floats(allow_nan=True), st.text(max_size=5),
    st.lists(st.integers(-3, 8), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just([]), st.just({}), st.just("site"), st.just("F"),
)


def _mutate(data: st.DataObject, root: dict[str, Any]) -> None:
    node: Any = root
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, dict | list) and child and data.draw(st.booleans()):
            node = child
            continue
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[key] = data.draw(_JUNK)
        elif action == "delete":
            del node[key]
        elif isinstance(node, dict):
            node[data.draw(st.text(min_size=1, max_size=4))] = data.draw(_JUNK)
        else:
            node.append(data.draw(_JUNK))
        return


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_mutations_only_ever_raise_protocol_invalid(data: st.DataObject) -> None:
    mutated = copy.deepcopy(_DEFAULT_DATA) if data.draw(st.booleans()) else minimal()
    for _ in range(data.draw(st.integers(1, 4))):
        _mutate(data, mutated)
    try:
        protocol = parse_protocol(mutated)
    except ProtocolInvalid as exc:
        assert exc.errors and all(isinstance(e, str) and e for e in exc.errors)
    else:
        assert isinstance(protocol, Protocol)
