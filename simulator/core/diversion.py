"""User-creator co-diversion: creators and users hashed (salted) into disjoint arm buckets of given shares.

A creator's bucket and a user's bucket come from independent salts (``salt + '/creator'`` and
``salt + '/user'``) and the same share boundaries, so arm A holds about ``share_A`` of the
creators and ``share_A`` of the users; a user in arm A is served only arm A's creators' items.
Ids whose hash falls beyond the last share (when shares sum to < 1) are in no arm (held out).
"""

from __future__ import annotations

import hashlib

import numpy as np

N_BUCKETS = 10_000
HOLDOUT = -1


def _salt64(salt: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(salt.encode(), digest_size=8).digest(), "little"))


def hash_ids(ids: np.ndarray, salt: str) -> np.ndarray:
    """splitmix64 of (id xor salt): a stable, well-mixed uint64 per id (vectorised)."""
    with np.errstate(over="ignore"):
        z = np.asarray(ids, np.int64).astype(np.uint64) ^ _salt64(salt)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class CoDiversion:
    """Assigns creators and users to arms; ``arm_of_*`` return arm indices (``HOLDOUT`` = none)."""

    def __init__(self, arm_names: list[str], shares: list[float], salt: str):
        if len(arm_names) != len(shares):
            raise ValueError("one share per arm")
        if sum(shares) > 1 + 1e-9:
            raise ValueError(f"shares sum to {sum(shares)} > 1")
        self.arm_names = list(arm_names)
        self.shares = list(shares)
        self.salt = salt
        self.bounds = np.round(np.cumsum(shares) * N_BUCKETS).astype(np.int64)

    def _arm(self, ids: np.ndarray, kind: str) -> np.ndarray:
        bucket = (hash_ids(ids, f"{self.salt}/{kind}") % np.uint64(N_BUCKETS)).astype(np.int64)
        arm = np.searchsorted(self.bounds, bucket, side="right")
        return np.where(arm < len(self.arm_names), arm, HOLDOUT).astype(np.int64)

    def arm_of_creators(self, creator_ids: np.ndarray) -> np.ndarray:
        return self._arm(creator_ids, "creator")

    def arm_of_users(self, user_ids: np.ndarray) -> np.ndarray:
        return self._arm(user_ids, "user")
