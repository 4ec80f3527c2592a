"""Co-diversion: deterministic, share-respecting, disjoint, salted assignment of creators and users to arms."""

import numpy as np
import pytest

from simulator.core.diversion import HOLDOUT, N_BUCKETS, CoDiversion, _salt64, hash_ids

IDS = np.arange(100_000, dtype=np.int64)
M64 = (1 << 64) - 1


def _splitmix64_reference(x: int, salt: int) -> int:
    """Pure-Python splitmix64 of (id xor salt), the hash the module documents."""
    z = ((x & M64) ^ salt) & M64
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def test_hash_matches_reference_splitmix64():
    ids = np.array([0, 1, 42, 2**40 + 7, -1, -(2**62)], np.int64)
    salt = int(_salt64("coldsim/user"))
    got = hash_ids(ids, "coldsim/user")
    assert got.dtype == np.uint64
    assert [int(v) for v in got] == [_splitmix64_reference(int(i), salt) for i in ids]


def test_assignment_is_deterministic():
    a = CoDiversion(["a", "b"], [0.5, 0.5], "s1")
    b = CoDiversion(["a", "b"], [0.5, 0.5], "s1")
    np.testing.assert_array_equal(a.arm_of_users(IDS), b.arm_of_users(IDS))
    np.testing.assert_array_equal(a.arm_of_creators(IDS), b.arm_of_creators(IDS))
    # per-id: the same id gets the same arm wherever it appears in the batch
    perm = np.random.default_rng(0).permutation(IDS)
    np.testing.assert_array_equal(a.arm_of_users(perm), a.arm_of_users(IDS)[perm])


@pytest.mark.parametrize("kind", ["users", "creators"])
def test_shares_respected_and_arms_disjoint(kind):
    shares = [0.2, 0.3, 0.5]
    div = CoDiversion(["a", "b", "c"], shares, "coldsim")
    arm = getattr(div, f"arm_of_{kind}")(IDS)
    # every id in exactly one arm (no holdout when shares sum to 1)
    assert set(np.unique(arm).tolist()) == {0, 1, 2}
    frac = np.bincount(arm, minlength=3) / len(IDS)
    np.testing.assert_allclose(frac, shares, atol=0.01)


def test_holdout_when_shares_sum_below_one():
    div = CoDiversion(["a", "b"], [0.3, 0.2], "coldsim")
    arm = div.arm_of_users(IDS)
    assert set(np.unique(arm).tolist()) == {HOLDOUT, 0, 1}
    assert abs((arm == 0).mean() - 0.3) < 0.01
    assert abs((arm == 1).mean() - 0.2) < 0.01
    assert abs((arm == HOLDOUT).mean() - 0.5) < 0.01
    np.testing.assert_array_equal(div.bounds, [3000, 5000])
    assert N_BUCKETS == 10_000


def test_different_salts_give_different_assignments():
    a = CoDiversion(["a", "b"], [0.5, 0.5], "salt-a").arm_of_users(IDS)
    b = CoDiversion(["a", "b"], [0.5, 0.5], "salt-b").arm_of_users(IDS)
    # independent hashes: about half of the ids change arm
    assert abs((a != b).mean() - 0.5) < 0.02


def test_creator_and_user_salts_are_independent():
    div = CoDiversion(["a", "b"], [0.5, 0.5], "coldsim")
    u, c = div.arm_of_users(IDS), div.arm_of_creators(IDS)
    assert abs((u == c).mean() - 0.5) < 0.02
    # the joint distribution factorises: each of the 4 cells holds a quarter
    joint = np.bincount(2 * u + c, minlength=4) / len(IDS)
    np.testing.assert_allclose(joint, 0.25, atol=0.01)


def test_bad_shares_rejected():
    with pytest.raises(ValueError, match="one share per arm"):
        CoDiversion(["a", "b"], [1.0], "s")
    with pytest.raises(ValueError, match="> 1"):
        CoDiversion(["a", "b"], [0.7, 0.6], "s")
