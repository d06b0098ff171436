"""Checks on lists that did not come from our generator, and the proof that assignments followed the list.

Both functions report every problem rather than stopping at the first: a statistician fixing an imported
CSV, or an auditor reading a reveal, needs the whole picture in one pass.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trialmgr.domain.randomization_design import BlockDesign, Slot, design_errors

if TYPE_CHECKING:
    from trialmgr.domain.randomization import SlotColumns

REQUIRED_COLUMNS = ("stratum", "sequence", "arm", "block")


@dataclass
class _ParsedRow:
    line: int
    stratum: str
    seq: int
    block: int | None
    arm: str | None
    block_size: int | None


def _parse_int(line: int, name: str, raw: object, errors: list[str]) -> int | None:
    text = str(raw).strip()
    try:
        value = int(text, 10)
    except ValueError:
        errors.append(f"line {line}: {name} {text!r} is not an integer")
        return None
    if value < 1:
        errors.append(f"line {line}: {name} must be >= 1, got {value}")
        return None
    return value


def _ranges(numbers: Sequence[int]) -> str:
    """[4, 5, 6, 9] -> "4-6, 9": gap reports stay readable when a whole block is missing."""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


def _parse_rows(
    rows: Iterable[Mapping[str, object]], design: BlockDesign, strata: Sequence[str], first_line: int
) -> tuple[list[_ParsedRow], list[str]]:
    known_strata, known_arms = set(strata), set(design.arm_codes)
    parsed: list[_ParsedRow] = []
    errors: list[str] = []
    for line, row in enumerate(rows, start=first_line):
        missing = [c for c in REQUIRED_COLUMNS if row.get(c) is None or str(row.get(c)).strip() == ""]
        if missing:
            errors.append(f"line {line}: missing {', '.join(missing)}")
        stratum = str(row.get("stratum") or "").strip()
        if stratum and stratum not in known_strata:
            errors.append(f"line {line}: unknown stratum {stratum!r}")
        arm = str(row.get("arm") or "").strip() or None
        if arm is not None and arm not in known_arms:
            errors.append(f"line {line}: unknown arm {arm!r} (arms: {', '.join(design.arm_codes)})")
            arm = None
        seq = _parse_int(line, "sequence", row["sequence"], errors) if "sequence" not in missing else None
        block = _parse_int(line, "block", row["block"], errors) if "block" not in missing else None
        size = None
        if row.get("block_size") not in (None, ""):
            size = _parse_int(line, "block_size", row["block_size"], errors)
        # A row we can place (known stratum, integer sequence) still takes part in the structure checks, so
        # that one bad arm does not also show up as a gap in the sequence.
        if stratum in known_strata and seq is not None:
            parsed.append(_ParsedRow(line, stratum, seq, block, arm, size))
    return parsed, errors


def _check_sequences(stratum: str, rows: list[_ParsedRow], errors: list[str]) -> list[_ParsedRow]:
    by_seq: dict[int, _ParsedRow] = {}
    for row in rows:
        first = by_seq.get(row.seq)
        if first is not None:
            errors.append(
                f"line {row.line}: duplicate sequence {row.seq} in stratum {stratum!r} (first at line {first.line})"
            )
        else:
            by_seq[row.seq] = row
    missing = sorted(set(range(1, max(by_seq) + 1)) - set(by_seq))
    if missing:
        errors.append(
            f"stratum {stratum!r}: sequence numbers {_ranges(missing)} missing "
            f"(sequence must run 1..{max(by_seq)} without gaps)"
        )
    return [by_seq[s] for s in sorted(by_seq)]


def _check_blocks(stratum: str, rows: list[_ParsedRow], design: BlockDesign, errors: list[str]) -> None:
    runs: list[list[_ParsedRow]] = []
    closed: set[int] = set()
    for row in rows:
        if row.block is None:
            return  # already reported; block structure cannot be judged
        if runs and runs[-1][0].block == row.block:
            runs[-1].append(row)
            continue
        expected = runs[-1][0].block + 1 if runs else 1
        if row.block in closed:
            errors.append(f"line {row.line}: block {row.block} of stratum {stratum!r} is not contiguous")
        elif row.block != expected:
            errors.append(
                f"line {row.line}: block {row.block} in stratum {stratum!r} where block {expected} was "
                "expected (blocks are numbered 1, 2, 3 ... in sequence order)"
            )
        if runs:
            closed.add(runs[-1][0].block)
        runs.append([row])

    allowed = ", ".join(map(str, design.block_sizes))
    for run in runs:
        size = len(run)
        where = f"stratum {stratum!r} block {run[0].block} (lines {run[0].line}-{run[-1].line})"
        for row in run:
            if row.block_size is not None and row.block_size != size:
                errors.append(f"line {row.line}: block_size {row.block_size} but block {row.block} has {size} rows")
        if size not in design.block_sizes:
            errors.append(f"{where}: {size} slots is not an allowed block size ({allowed})")
            continue
        if any(row.arm is None for row in run):
            continue
        need = dict(zip(design.arm_codes, design.arm_counts(size), strict=True))
        have = {code: sum(1 for row in run if row.arm == code) for code in design.arm_codes}
        if have != need:
            fmt = ", ".join
            errors.append(
                f"{where}: not balanced: {fmt(f'{a} {n}' for a, n in have.items())}; "
                f"a block of {size} needs {fmt(f'{a} {n}' for a, n in need.items())}"
            )


def validate_imported_rows(
    rows: Iterable[Mapping[str, object]],
    design: BlockDesign,
    strata: Sequence[str],
    *,
    first_line: int = 2,
) -> tuple[list[Slot], list[str]]:
    """Check an externally generated list (dicts with stratum, sequence, arm, block[, block_size]).

    Line numbers count from `first_line` (2: the CSV header is line 1). Returns (slots, errors); slots are
    ordered by `strata` then sequence and are empty whenever there is any error, so a bad list is refused
    whole.
    """
    problems = design_errors(design)
    if problems:
        return [], [f"design: {p}" for p in problems]
    parsed, errors = _parse_rows(rows, design, strata, first_line)
    grouped: dict[str, list[_ParsedRow]] = defaultdict(list)
    for row in parsed:
        grouped[row.stratum].append(row)
    ordered: dict[str, list[_ParsedRow]] = {}
    for stratum in strata:
        if not grouped.get(stratum):
            errors.append(f"stratum {stratum!r}: no rows (every stratum needs a list)")
            continue
        ordered[stratum] = _check_sequences(stratum, grouped[stratum], errors)
        _check_blocks(stratum, ordered[stratum], design, errors)
    if errors:
        return [], errors
    slots: list[Slot] = []
    for stratum, stratum_rows in ordered.items():
        sizes = Counter(row.block for row in stratum_rows)
        slots.extend(Slot(stratum, r.seq, r.block, sizes[r.block], r.arm) for r in stratum_rows)  # type: ignore[arg-type]
    return slots, []


def _arms_by_seq(slots: Sequence[Slot] | SlotColumns) -> dict[int, str]:
    if hasattr(slots, "arm_labels"):
        return dict(enumerate(slots.arm_labels(), start=1))  # type: ignore[union-attr]
    return {slot.seq: slot.arm for slot in slots}  # type: ignore[union-attr]


def verify_assignments(
    slots_by_stratum: Mapping[str, Sequence[Slot] | SlotColumns],
    assignments: Iterable[tuple[str, int, str, str]],
) -> list[str]:
    """Every way the assignments depart from the list; empty means they followed it exactly.

    `assignments` are (stratum, seq, arm, participant) in the order they were made. Checked: the arm matches
    the slot, each stratum's slots are used 1, 2, 3 ... with none skipped, none used out of order or twice,
    and no participant randomized twice. Unused slots at the end of a stratum are normal.
    """
    errors: list[str] = []
    arms: dict[str, dict[int, str]] = {}
    next_seq: dict[str, int] = defaultdict(lambda: 1)
    used: dict[tuple[str, int], str] = {}
    seen: dict[str, int] = {}
    for n, (stratum, seq, arm, participant) in enumerate(assignments, start=1):
        who = f"assignment {n} ({participant})"
        if participant in seen:
            errors.append(f"{who}: participant already randomized by assignment {seen[participant]}")
        seen.setdefault(participant, n)
        if stratum not in slots_by_stratum:
            errors.append(f"{who}: stratum {stratum!r} is not in the list")
            continue
        if stratum not in arms:
            arms[stratum] = _arms_by_seq(slots_by_stratum[stratum])
        listed = arms[stratum].get(seq)
        if listed is None:
            errors.append(f"{who}: stratum {stratum!r} has no slot {seq} (list has {len(arms[stratum])})")
            continue
        if listed != arm:
            errors.append(f"{who}: got {arm!r} but slot {stratum!r} #{seq} is {listed!r}")
        if (stratum, seq) in used:
            errors.append(f"{who}: slot {stratum!r} #{seq} already used by {used[(stratum, seq)]}")
            continue
        used[(stratum, seq)] = participant
        expected = next_seq[stratum]
        if seq > expected:
            skipped = _ranges(list(range(expected, seq)))
            errors.append(f"{who}: took slot {stratum!r} #{seq}, skipping slot(s) {skipped}")
        elif seq < expected:
            errors.append(f"{who}: took slot {stratum!r} #{seq} out of order, after slot #{expected - 1}")
        next_seq[stratum] = max(expected, seq + 1)
    return errors
