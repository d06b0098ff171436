"""The read-only summaries the case report form pages use (services/crf_overview.py)."""

from __future__ import annotations

from trialmgr.domain.vocab import Role
from trialmgr.services import crf, crf_overview, enrollment, queries, trials
from trialmgr.services.context import Actor, cli_actor

T = "hip-pt-clbp"


def test_record_infos_anytime_entries_and_query_rows(db, randomized):
    de, pa = randomized("DE", "F"), randomized("PA", "M")
    actor = cli_actor()
    with db.session() as s:
        p = enrollment.get_participant(s, actor, T, de)
        crf.save_form(s, actor, p, "pain", {"back_pain": "6", "hip_pain": "3"}, visit_code="BL")
        crf.save_form(s, actor, p, "adverse_event", {
            "term": "fall", "onset_date": "2020-01-02", "severity": "mild", "serious": "no", "relatedness": "not",
            "action_taken": "none", "outcome": "recovered"})
        rec = crf.read_form(s, actor, p, "pain", "BL").record
        q1 = queries.open_query(s, actor, p, rec, "back_pain", "check")
        q2 = queries.open_query(s, actor, p, rec, "hip_pain", "check too")
        queries.close_query(s, actor, T, q2.id)
        pp = enrollment.get_participant(s, actor, T, pa)
        crf.save_form(s, actor, pp, "pain", {"back_pain": "1", "hip_pain": "1"}, visit_code="BL")
        queries.open_query(s, actor, pp, crf.read_form(s, actor, pp, "pain", "BL").record, "hip_pain", "x")

    with db.session(write=False) as s:
        p = enrollment.get_participant(s, actor, T, de)
        infos = crf_overview.record_infos(s, p)
        pain = infos[(rec.visit_id, "pain", 1)]
        assert pain.open_queries == 1 and not pain.verified  # the closed query is not counted
        entries = crf_overview.anytime_entries(s, trials.current_protocol(s, T), p)
        assert set(entries) == {"adverse_event", "deviation", "withdrawal"}
        (ae,) = entries["adverse_event"]
        assert ae.instance == 1 and ae.summary[:2] == [("Event (term)", "fall"), ("Onset date", "2020-01-02")]
        assert [q.id for q in crf_overview.queries_by_field(s, rec)["back_pain"]] == [q1.id]

        rows = crf_overview.query_rows(s, actor, T)
        assert {r.visit_code for r in rows} == {"BL"} and len(rows) == 3
        assert crf_overview.open_counts(rows) == ({"DE": 1, "PA": 1}, {de: 1, pa: 1})
        assert len(crf_overview.query_rows(s, actor, T, site="pa")) == 1
        coord = Actor(username="c", role=Role.COORDINATOR, trial=T, sites=("DE",))
        assert {r.participant.code for r in crf_overview.query_rows(s, coord, T)} == {de}


def test_value_words():
    from trialmgr.domain.protocol import Choice, FieldSpec

    sex = FieldSpec(id="sex", label="Sex", type="choice", choices=(Choice("F", "Female"),))
    assert crf_overview.value_words(sex, "F") == "Female"
    assert crf_overview.value_words(sex, "X") == "X"  # kept as stored when the protocol no longer knows it
    assert crf_overview.value_words(sex, None, "RF") == "missing: RF — refused"
    assert crf_overview.value_words(sex, "") == ""
