"""Value types of a permuted-block design: the slot, the design and its validation.

Kept apart from the generator so that import validation and assignment proofs can use them without a cycle;
`trialmgr.domain.randomization` re-exports everything here, and callers should import from there.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from trialmgr.domain.concealment import ARM_CODE_MAX_BYTES

# The canonical list encoding is "stratum,seq,block,block_size,arm\n"; these characters would make it
# ambiguous, and so a commitment could match two different lists.
FORBIDDEN_KEY_CHARS = (",", "\n", "\r")
WEIGHT_SUM_TOLERANCE = 1e-9


class InvalidDesign(ValueError):
    """A design or a set of strata that cannot produce a list; `errors` lists every problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True, slots=True)
class Slot:
    """One position of the allocation list. `seq` and `block` are 1-based within the stratum."""

    stratum: str
    seq: int
    block: int
    block_size: int
    arm: str

    def row(self) -> tuple[str, int, int, int, str]:
        return (self.stratum, self.seq, self.block, self.block_size, self.arm)


@dataclass(frozen=True)
class BlockDesign:
    """Arms with integer ratios, and the block sizes with the probability of drawing each."""

    arms: tuple[tuple[str, int], ...]
    block_sizes: tuple[int, ...]
    block_weights: tuple[float, ...]

    @classmethod
    def of(
        cls,
        arms: Sequence[tuple[str, int]],
        block_sizes: Sequence[int],
        block_weights: Sequence[float] | None = None,
    ) -> BlockDesign:
        """Convenience constructor; block sizes are equiprobable unless weights are given."""
        sizes = tuple(block_sizes)
        weights = tuple(block_weights) if block_weights is not None else tuple(1 / len(sizes) for _ in sizes)
        return cls(tuple((code, ratio) for code, ratio in arms), sizes, weights)

    @property
    def ratio_sum(self) -> int:
        return sum(ratio for _, ratio in self.arms)

    @property
    def arm_codes(self) -> tuple[str, ...]:
        return tuple(code for code, _ in self.arms)

    @property
    def ratios(self) -> tuple[int, ...]:
        return tuple(ratio for _, ratio in self.arms)

    def arm_counts(self, block_size: int) -> tuple[int, ...]:
        """How many slots of each arm a block of this size holds."""
        return tuple(ratio * block_size // self.ratio_sum for _, ratio in self.arms)

    def active_sizes(self) -> tuple[int, ...]:
        """Block sizes that can actually be drawn (positive weight), ascending."""
        return tuple(sorted(b for b, w in zip(self.block_sizes, self.block_weights, strict=True) if w > 0))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def key_errors(kind: str, key: object) -> list[str]:
    """Problems with an arm code or stratum key as used in the canonical list encoding."""
    if not isinstance(key, str) or not key:
        return [f"{kind} {key!r} must be a non-empty string"]
    errors = []
    bad = sorted({repr(ch) for ch in FORBIDDEN_KEY_CHARS if ch in key})
    if bad:
        errors.append(f"{kind} {key!r} must not contain {', '.join(bad)}")
    if kind == "arm" and len(key.encode("utf-8")) > ARM_CODE_MAX_BYTES:
        errors.append(f"arm {key!r} is longer than {ARM_CODE_MAX_BYTES} bytes")
    return errors


def design_errors(design: BlockDesign) -> list[str]:
    """Every problem with the design, each naming the field and the rule; empty when it is valid."""
    errors: list[str] = []
    if not design.arms:
        errors.append("arms: at least one arm is required")
    seen: set[str] = set()
    ratios_ok = True
    for code, ratio in design.arms:
        errors.extend(f"arms: {msg}" for msg in key_errors("arm", code))
        if code in seen:
            errors.append(f"arms: duplicate arm code {code!r}")
        seen.add(code)
        if not _is_int(ratio) or ratio < 1:
            errors.append(f"arms: ratio of {code!r} must be an integer >= 1, got {ratio!r}")
            ratios_ok = False

    if not design.block_sizes:
        errors.append("block_sizes: at least one block size is required")
    ratio_sum = design.ratio_sum if ratios_ok and design.arms else None
    for size in design.block_sizes:
        if not _is_int(size) or size < 1:
            errors.append(f"block_sizes: {size!r} is not a positive integer")
        elif ratio_sum and size % ratio_sum:
            errors.append(f"block_sizes: {size} is not a multiple of the ratio sum {ratio_sum}")
    dupes = sorted((s for s, n in Counter(design.block_sizes).items() if n > 1), key=repr)
    if dupes:
        errors.append(f"block_sizes: duplicate sizes {', '.join(map(repr, dupes))}")

    weights = design.block_weights
    if len(weights) != len(design.block_sizes):
        errors.append(f"block_weights: {len(weights)} weights for {len(design.block_sizes)} block sizes")
    finite = True
    for size, weight in zip(design.block_sizes, weights, strict=False):
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not math.isfinite(weight):
            errors.append(f"block_weights: weight of size {size!r} is not a finite number: {weight!r}")
            finite = False
        elif weight < 0:
            errors.append(f"block_weights: weight of size {size!r} is negative ({weight})")
    if finite and weights and abs(math.fsum(weights) - 1.0) > WEIGHT_SUM_TOLERANCE:
        errors.append(f"block_weights: weights sum to {math.fsum(weights):g}, they must sum to 1")
    return errors


def strata_errors(strata: Sequence[str]) -> list[str]:
    errors: list[str] = []
    if not strata:
        errors.append("strata: at least one stratum is required")
    for key in strata:
        errors.extend(f"strata: {msg}" for msg in key_errors("stratum", key))
    dupes = sorted(s for s, n in Counter(strata).items() if n > 1)
    if dupes:
        errors.append(f"strata: duplicate stratum keys {', '.join(map(repr, dupes))}")
    return errors
