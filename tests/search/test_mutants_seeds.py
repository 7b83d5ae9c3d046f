"""Seed derivation (search.engine.derive_seeds): the seeds of a run are part of its
reproducibility contract (a resumed or re-run search must draw the same ones), so
they are pinned to exact values, not only checked for shape."""
import pytest

from lossforge.search.engine import derive_seeds


def test_seeds_are_pinned_values_of_numpy_seed_sequence():
    # SeedSequence([seed, salt]).generate_state(n, uint32): changing the entropy, its
    # order, the dtype or the count changes these numbers and breaks resumed runs.
    assert derive_seeds(0, 4, 0) == [2968811710, 3677149159, 745650761, 2884920346]
    assert derive_seeds(7, 3, 11) == [1247478191, 1037493754, 2022420208]
    assert derive_seeds(2**40, 2, 3) == [2538075546, 2632485042]


def test_seed_and_salt_both_matter_and_are_not_interchangeable():
    base = derive_seeds(7, 3, 11)
    assert derive_seeds(7, 3, 12) == [2070387560, 780412982, 3380298560] != base
    assert derive_seeds(8, 3, 11) == [777786001, 2243912329, 2140938836] != base
    assert derive_seeds(11, 3, 7) != base


@pytest.mark.parametrize("n", [0, 1, 5])
def test_count_and_type(n):
    seeds = derive_seeds(3, n, 1)
    assert len(seeds) == n
    assert all(type(s) is int and 0 <= s < 2**32 for s in seeds)
    # a prefix is stable: asking for more seeds does not change the first ones
    assert derive_seeds(3, n + 2, 1)[:n] == seeds
