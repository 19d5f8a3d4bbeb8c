"""Peak overlap of job intervals, used to prove the orchestrator's concurrency limits at the server."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.simulator.records import peak_overlap


def test_peak_overlap_examples() -> None:
    assert peak_overlap([]) == 0
    assert peak_overlap([(0, 10), (5, 15), (9, 20)]) == 3
    assert peak_overlap([(0, 10), (10, 20)]) == 1  # back to back is not overlap
    assert peak_overlap([(5, 5), (0, 1)]) == 1  # empty intervals never count


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=30))
def test_peak_overlap_matches_brute_force(raw: list[tuple[int, int]]) -> None:
    spans = [(start, start + length) for start, length in raw]
    brute = max((sum(1 for s, e in spans if s <= t < e) for t in range(0, 101)), default=0)
    assert peak_overlap(spans) == brute
