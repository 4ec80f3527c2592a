"""DualRec equations on hand-built examples: score integration (eq. 10), boost (eq. 14), exposure budget."""

from __future__ import annotations

import numpy as np
import pytest

from serving.channels.dualrec.scoring import budget_mask, combined_scores, integrate_scores


def test_score_integration_with_and_without_user_bias():
    p = np.array([[0.2, 0.1, 0.5], [0.4, 0.0, 0.0]])
    w = np.array([1.0, 2.0, 0.5])
    # row 0: 0.2 + 0.2 + 0.25 = 0.65 ; row 1: 0.4
    np.testing.assert_allclose(integrate_scores(p, w), [0.65, 0.4])
    # v5: divided by b_u = 0.13 and 0.8 -> 5.0 and 0.5: the low-activity user's affinity counts more
    np.testing.assert_allclose(integrate_scores(p, w, np.array([0.13, 0.8])), [5.0, 0.5])
    with pytest.raises(ValueError, match="b_u"):
        integrate_scores(p, w, np.array([np.nan, 1.0]))


def test_combined_boost_only_for_matching_set_items():
    s = np.array([[1.0, 1.0]])
    s_item = np.array([[0.5, 0.5]])
    out = combined_scores(s, s_item, np.array([[True, False]]), alpha=2.0)
    np.testing.assert_allclose(out, [[2.0, 1.0]])  # 1 + 2 * 0.5 for the cached item only


def test_budget_keeps_only_the_best_dualrec_candidates():
    score = np.array([[0.9, 0.8, 0.1], [0.7, 0.95, 0.2]])
    dual = np.array([[True, False, True], [True, True, False]])
    # 2 requests x slate 5 x budget 0.2 = 2 DualRec candidates may compete: the two best, 0.95 and 0.9
    m = budget_mask(score, dual, slate_size=5, budget=0.2)
    assert m.tolist() == [[True, True, False], [False, True, True]]
    assert budget_mask(score, dual, slate_size=5, budget=0.0)[dual].sum() == 0
