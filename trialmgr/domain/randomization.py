"""Allocation list generation: permuted blocks of random size, stratified, reproducible from one seed.

The whole list is generated once when the trial opens. Each stratum gets its own PCG64 stream derived from the
master entropy and the stratum key, so strata are independent, adding a stratum leaves the others untouched,
and at reveal the same entropy regenerates the identical list. Methods are strategies (`STRATEGIES`), so
another list-based method can be added without touching assignment, concealment or audit.

Hot path: slots stay as numpy columns (`SlotColumns`); `Slot` objects are built only on request.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

import numpy as np

from trialmgr.domain.randomization_checks import validate_imported_rows, verify_assignments
from trialmgr.domain.randomization_design import (
    BlockDesign,
    InvalidDesign,
    Slot,
    design_errors,
    key_errors,
    strata_errors,
)

__all__ = [
    "STRATEGIES",
    "AllocationStrategy",
    "BlockDesign",
    "GeneratedList",
    "InvalidDesign",
    "PermutedBlocks",
    "Slot",
    "SlotColumns",
    "design_errors",
    "generate_list",
    "list_canonical_bytes",
    "list_commitment",
    "new_commitment_salt",
    "new_master_entropy",
    "stratum_rng",
    "validate_imported_rows",
    "verify_assignments",
]

Row = tuple[str, int, int, int, str]
MIN_SALT_BYTES = 16


# --- seeding -------------------------------------------------------------------------------------------


def new_master_entropy() -> int:
    """128 bits from the OS CSPRNG: enough that the list cannot be guessed by enumerating seeds."""
    return secrets.randbits(128)


def stratum_spawn_key(stratum: str) -> int:
    """SHA-256 of the UTF-8 stratum key as a big-endian integer.

    A hash rather than the stratum's position, so that the stream of "DE|F" does not depend on which other
    strata exist or in what order they are listed.
    """
    return int.from_bytes(hashlib.sha256(stratum.encode("utf-8")).digest(), "big")


def stratum_rng(master_entropy: int, stratum: str) -> np.random.Generator:
    """The stratum's own generator: PCG64(SeedSequence(master_entropy, spawn_key=(sha256(stratum),)))."""
    if isinstance(master_entropy, bool) or not isinstance(master_entropy, int) or master_entropy < 0:
        raise ValueError("master_entropy must be a non-negative integer")
    seq = np.random.SeedSequence(master_entropy, spawn_key=(stratum_spawn_key(stratum),))
    return np.random.Generator(np.random.PCG64(seq))


# --- columns and strategies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotColumns:
    """One stratum's slots as parallel arrays; position i is seq i+1. `arm` indexes `arm_codes`."""

    block: np.ndarray  # int32, 1-based
    block_size: np.ndarray  # int32
    arm: np.ndarray  # uint8
    arm_codes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.arm.shape[0])

    @property
    def seq(self) -> np.ndarray:
        return np.arange(1, len(self) + 1, dtype=np.int32)

    def arm_labels(self) -> list[str]:
        codes = self.arm_codes
        return [codes[i] for i in self.arm.tolist()]

    def slots(self, stratum: str) -> list[Slot]:
        return [
            Slot(stratum, i, b, s, a)
            for i, (b, s, a) in enumerate(
                zip(self.block.tolist(), self.block_size.tolist(), self.arm_labels(), strict=True), start=1
            )
        ]


class AllocationStrategy(Protocol):
    """A method that pre-generates one stratum's list from that stratum's generator.

    `generate_columns` is the fast path used by `generate_list`; `generate` is the same list as objects.
    Implementations must consume `rng` deterministically so that the same entropy gives the same list.
    """

    name: str

    def generate_columns(self, design: BlockDesign, n_slots: int, rng: np.random.Generator) -> SlotColumns: ...

    def generate(self, design: BlockDesign, stratum: str, n_slots: int, rng: np.random.Generator) -> list[Slot]: ...


def draw_block_sizes(design: BlockDesign, n_slots: int, rng: np.random.Generator) -> np.ndarray:
    """Block sizes drawn with the design's probabilities until they cover at least n_slots."""
    sizes = np.asarray(design.block_sizes, dtype=np.int64)
    weights = np.asarray(design.block_weights, dtype=np.float64)
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0  # so that no draw in [0, 1) can fall past the last size through rounding
    mean = float(np.dot(sizes, weights / weights.sum()))
    expected = n_slots / mean
    chunk = int(expected + 4 * np.sqrt(expected) + 4)
    drawn: list[np.ndarray] = []
    total = 0
    while total < n_slots:
        # Inverse-CDF on rng.random() rather than rng.choice: the stream then depends only on PCG64 and
        # random(), whose output numpy keeps stable, so a list can be regenerated on a later numpy.
        part = sizes[np.searchsorted(cdf, rng.random(chunk), side="right")]
        drawn.append(part)
        total += int(part.sum())
    all_sizes = np.concatenate(drawn)
    n_blocks = int(np.searchsorted(np.cumsum(all_sizes), n_slots, side="left")) + 1
    return all_sizes[:n_blocks]


def arms_for_blocks(design: BlockDesign, sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Arm index of every slot for consecutive blocks of the given sizes.

    Each block is its balanced pattern permuted by the argsort of one uniform key per slot: a uniformly
    random permutation (ties have probability ~2**-53), vectorised per block size.
    """
    total = int(sizes.sum())
    keys = rng.random(total)
    out = np.empty(total, dtype=np.uint8)
    starts = np.cumsum(sizes) - sizes
    for size in np.unique(sizes).tolist():
        pattern = np.repeat(np.arange(len(design.arms), dtype=np.uint8), design.arm_counts(size))
        pos = starts[sizes == size][:, None] + np.arange(size)
        out[pos] = pattern[np.argsort(keys[pos], axis=1)]
    return out


@dataclass(frozen=True)
class PermutedBlocks:
    """Permuted blocks of random size; the list of a stratum always ends at a block end."""

    name: str = "permuted_blocks"

    def generate_columns(self, design: BlockDesign, n_slots: int, rng: np.random.Generator) -> SlotColumns:
        sizes = draw_block_sizes(design, n_slots, rng)
        columns = (
            np.repeat(np.arange(1, sizes.shape[0] + 1, dtype=np.int32), sizes),
            np.repeat(sizes.astype(np.int32), sizes),
            arms_for_blocks(design, sizes, rng),
        )
        for column in columns:
            column.flags.writeable = False  # a list is committed once generated; nothing may edit it in place
        block, block_size, arm = columns
        return SlotColumns(block=block, block_size=block_size, arm=arm, arm_codes=design.arm_codes)

    def generate(self, design: BlockDesign, stratum: str, n_slots: int, rng: np.random.Generator) -> list[Slot]:
        return self.generate_columns(design, n_slots, rng).slots(stratum)


STRATEGIES: dict[str, AllocationStrategy] = {"permuted_blocks": PermutedBlocks()}


# --- the generated list --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedList:
    """A whole list. `columns` maps each stratum (in the order given) to its arrays."""

    master_entropy: int
    design: BlockDesign
    method: str
    columns: Mapping[str, SlotColumns] = field(repr=False)

    @property
    def strata(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def __len__(self) -> int:
        return sum(len(c) for c in self.columns.values())

    def stratum_slots(self, stratum: str) -> list[Slot]:
        return self.columns[stratum].slots(stratum)

    @cached_property
    def slots(self) -> dict[str, list[Slot]]:
        """Every slot as objects (built on first use; a million slots take about a second)."""
        return {stratum: cols.slots(stratum) for stratum, cols in self.columns.items()}

    def rows(self) -> Iterator[Row]:
        """(stratum, seq, block, block_size, arm) in canonical order: stratum, then seq."""
        for stratum in sorted(self.columns):
            cols = self.columns[stratum]
            blocks, sizes = cols.block.tolist(), cols.block_size.tolist()
            for seq, (block, size, arm) in enumerate(zip(blocks, sizes, cols.arm_labels(), strict=True), 1):
                yield (stratum, seq, block, size, arm)

    def canonical_bytes(self) -> bytes:
        """Same bytes as list_canonical_bytes(self.rows()); skips re-checking keys validated at generation."""
        parts: list[str] = []
        for stratum in sorted(self.columns):
            cols = self.columns[stratum]
            codes = [f"{code}\n" for code in cols.arm_codes]
            tails = [codes[i] for i in cols.arm.tolist()]
            seqs = range(1, len(cols) + 1)
            parts.extend(
                f"{stratum},{q},{b},{n},{t}"
                for q, b, n, t in zip(seqs, cols.block.tolist(), cols.block_size.tolist(), tails, strict=True)
            )
        return "".join(parts).encode("utf-8")

    def commitment(self, salt: bytes) -> str:
        return _commit(self.canonical_bytes(), salt)


def generate_list(
    design: BlockDesign,
    strata: Sequence[str],
    slots_per_stratum: int,
    *,
    master_entropy: int | None = None,
    method: str = "permuted_blocks",
) -> GeneratedList:
    """Generate every stratum's list; each has at least slots_per_stratum slots (more to finish a block).

    Raises InvalidDesign listing every problem with the design, the strata or the method.
    """
    strata = list(strata)
    errors = design_errors(design) + strata_errors(strata)
    if isinstance(slots_per_stratum, bool) or not isinstance(slots_per_stratum, int) or slots_per_stratum < 1:
        errors.append(f"slots_per_stratum: must be a positive integer, got {slots_per_stratum!r}")
    if master_entropy is not None and (
        isinstance(master_entropy, bool) or not isinstance(master_entropy, int) or master_entropy < 0
    ):
        errors.append(f"master_entropy: must be a non-negative integer, got {master_entropy!r}")
    if method not in STRATEGIES:
        errors.append(f"method: unknown method {method!r} (known: {', '.join(sorted(STRATEGIES))})")
    if errors:
        raise InvalidDesign(errors)
    entropy = new_master_entropy() if master_entropy is None else master_entropy
    strategy = STRATEGIES[method]
    columns = {
        stratum: strategy.generate_columns(design, slots_per_stratum, stratum_rng(entropy, stratum))
        for stratum in strata
    }
    return GeneratedList(master_entropy=entropy, design=design, method=method, columns=columns)


# --- canonical encoding and commitment -----------------------------------------------------------------


def _check_number(name: str, value: object) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def list_canonical_bytes(rows: Iterable[Slot | Sequence[object]]) -> bytes:
    """One "stratum,seq,block,block_size,arm\\n" line per slot, ordered by stratum (code points) then seq.

    Order is imposed here so that the encoding does not depend on how the rows were read back; keys that
    would make the encoding ambiguous (a comma, a newline) and duplicate slots are refused.
    """
    checked: set[tuple[str, object]] = set()
    norm: list[Row] = []
    for item in rows:
        stratum, seq, block, size, arm = item.row() if isinstance(item, Slot) else tuple(item)
        for kind, key in (("stratum", stratum), ("arm", arm)):
            if (kind, key) not in checked:
                problems = key_errors(kind, key)
                if problems:
                    raise ValueError("; ".join(problems))
                checked.add((kind, key))
        norm.append(
            (
                stratum,  # type: ignore[arg-type]
                _check_number("seq", seq),
                _check_number("block", block),
                _check_number("block_size", size),
                arm,  # type: ignore[arg-type]
            )
        )
    norm.sort(key=lambda r: (r[0], r[1]))
    for prev, cur in zip(norm, norm[1:], strict=False):
        if prev[0] == cur[0] and prev[1] == cur[1]:
            raise ValueError(f"duplicate slot {cur[0]!r} seq {cur[1]}")
    return "".join(f"{s},{q},{b},{n},{a}\n" for s, q, b, n, a in norm).encode("utf-8")


def new_commitment_salt() -> bytes:
    return secrets.token_bytes(32)


def list_commitment(rows: Iterable[Slot | Sequence[object]], salt: bytes) -> str:
    """SHA-256 hex of salt || canonical bytes.

    The salt (kept encrypted, disclosed at reveal) stops anyone recovering a short list by hashing every
    candidate list and comparing with the commitment in the audit trail.
    """
    return _commit(list_canonical_bytes(rows), salt)


def _commit(canonical: bytes, salt: bytes) -> str:
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"salt must be at least {MIN_SALT_BYTES} bytes")
    digest = hashlib.sha256(salt)
    digest.update(canonical)
    return digest.hexdigest()
