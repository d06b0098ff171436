"""Import of a statistician's list, and the proof that assignments followed the list."""

from __future__ import annotations

import csv
import io

from trialmgr.domain.randomization import (
    BlockDesign,
    Slot,
    generate_list,
    validate_imported_rows,
    verify_assignments,
)

DESIGN = BlockDesign.of([("HIP", 1), ("SPINE", 1)], [2, 4])
STRATA = ["DE|F", "DE|M"]

GOOD_CSV = """stratum,sequence,block,arm
DE|F,1,1,HIP
DE|F,2,1,SPINE
DE|F,3,2,SPINE
DE|F,4,2,SPINE
DE|F,5,2,HIP
DE|F,6,2,HIP
DE|M,1,1,SPINE
DE|M,2,1,HIP
"""


def read(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_a_good_list_is_accepted_as_slots():
    slots, errors = validate_imported_rows(read(GOOD_CSV), DESIGN, STRATA)
    assert errors == []
    assert slots[2] == Slot("DE|F", 3, 2, 4, "SPINE")
    assert [(s.stratum, s.seq) for s in slots][-2:] == [("DE|M", 1), ("DE|M", 2)]


def test_file_order_does_not_matter():
    lines = GOOD_CSV.splitlines()
    shuffled = "\n".join([lines[0], *reversed(lines[1:])])
    slots, errors = validate_imported_rows(read(shuffled), DESIGN, STRATA)
    assert errors == [] and len(slots) == 8


def test_every_error_is_listed_with_its_line():
    text = """stratum,sequence,block,arm
DE|F,1,1,HIP
DE|F,2,1,HIP
DE|F,3,2,PLACEBO
DE|F,5,2,SPINE
DE|F,x,2,SPINE
PA|F,1,1,HIP
DE|F,5,2,HIP
"""
    slots, errors = validate_imported_rows(read(text), DESIGN, STRATA)
    assert slots == []
    assert "line 4: unknown arm 'PLACEBO' (arms: HIP, SPINE)" in errors
    assert "line 6: sequence 'x' is not an integer" in errors
    assert "line 7: unknown stratum 'PA|F'" in errors
    assert "line 8: duplicate sequence 5 in stratum 'DE|F' (first at line 5)" in errors
    assert "stratum 'DE|F': sequence numbers 4 missing (sequence must run 1..5 without gaps)" in errors
    assert any(e.startswith("stratum 'DE|F' block 1 (lines 2-3): not balanced: HIP 2, SPINE 0") for e in errors)
    assert "stratum 'DE|M': no rows (every stratum needs a list)" in errors


def test_block_sizes_and_numbering_are_checked():
    text = """stratum,sequence,block,arm,block_size
DE|F,1,1,HIP,2
DE|F,2,1,SPINE,2
DE|F,3,3,HIP,3
DE|F,4,3,SPINE,3
DE|F,5,3,HIP,3
DE|M,1,1,HIP,2
DE|M,2,2,SPINE,2
DE|M,3,1,SPINE,2
DE|M,4,2,HIP,2
"""
    _, errors = validate_imported_rows(read(text), DESIGN, STRATA)
    assert any(e.startswith("line 4: block 3 in stratum 'DE|F' where block 2 was expected") for e in errors)
    assert any("3 slots is not an allowed block size (2, 4)" in e for e in errors)
    assert "line 9: block 1 of stratum 'DE|M' is not contiguous" in errors


def test_missing_values_and_bad_numbers_are_reported():
    text = """stratum,sequence,block,arm
DE|F,1,,HIP
DE|F,0,1,SPINE
DE|M,1,1,
"""
    _, errors = validate_imported_rows(read(text), DESIGN, STRATA)
    assert "line 2: missing block" in errors
    assert "line 3: sequence must be >= 1, got 0" in errors
    assert "line 4: missing arm" in errors


def test_an_invalid_design_is_reported_instead_of_the_rows():
    bad = BlockDesign.of([("HIP", 1), ("SPINE", 1)], [3])
    assert validate_imported_rows(read(GOOD_CSV), bad, STRATA) == (
        [],
        ["design: block_sizes: 3 is not a multiple of the ratio sum 2"],
    )


def _assignments(generated, stratum, n):
    arms = generated.columns[stratum].arm_labels()
    return [(stratum, seq, arms[seq - 1], f"P{stratum}{seq}") for seq in range(1, n + 1)]


def test_assignments_that_follow_the_list_verify():
    generated = generate_list(DESIGN, STRATA, 10, master_entropy=4)
    made = _assignments(generated, "DE|F", 7) + _assignments(generated, "DE|M", 3)
    assert verify_assignments(generated.slots, made) == []
    assert verify_assignments(generated.columns, made) == []


def test_wrong_arm_skipped_reused_and_out_of_order_slots_are_caught():
    generated = generate_list(DESIGN, STRATA, 10, master_entropy=4)
    made = _assignments(generated, "DE|F", 6)
    listed = made[1][2]
    other = "SPINE" if listed == "HIP" else "HIP"
    made[1] = ("DE|F", 2, other, made[1][3])  # wrong arm
    made = [made[0], made[1], made[3], made[2], made[4], made[4], made[5]]  # 4 before 3, slot 5 twice
    made[5] = (*made[5][:3], "P-other")
    made.append(("DE|M", 3, "HIP", "P-skip"))  # DE|M slots 1-2 skipped
    made.append(("XX", 1, "HIP", "P-x"))
    made.append(("DE|F", 999, "HIP", "P-far"))
    made.append(("DE|M", 4, generated.columns["DE|M"].arm_labels()[3], "P-skip"))
    errors = verify_assignments(generated.slots, made)
    assert f"assignment 2 (PDE|F2): got '{other}' but slot 'DE|F' #2 is '{listed}'" in errors
    assert "assignment 3 (PDE|F4): took slot 'DE|F' #4, skipping slot(s) 3" in errors
    assert "assignment 4 (PDE|F3): took slot 'DE|F' #3 out of order, after slot #4" in errors
    assert "assignment 6 (P-other): slot 'DE|F' #5 already used by PDE|F5" in errors
    assert any(e.startswith("assignment 8 (P-skip): took slot 'DE|M' #3, skipping slot(s) 1-2") for e in errors)
    assert "assignment 9 (P-x): stratum 'XX' is not in the list" in errors
    assert any(e.startswith("assignment 10 (P-far): stratum 'DE|F' has no slot 999") for e in errors)
    assert "assignment 11 (P-skip): participant already randomized by assignment 8" in errors
