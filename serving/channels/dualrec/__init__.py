"""DualRec (papers/dualrec_creator_side.txt, SPEC section 5): creator-side matching on upload, UAC and the boosted
combined ranking, as one channel of an arm's stack.

On every upload batch (``on_upload``), for each new item:
  retrieval into candidate users: (a) the creator-side two-tower, its user ANN index queried with the
  item's vector; (b, v3+) item similarity: the recent likers of the items most similar in content;
  (c, v4+) user similarity: users near (in the same user index) the creator's recent audience;
  ranking: the creator-side multi-task ranker, integrated as s = sum_k w_k p_k (/ b_u from v5, eq. 10);
  UAC: the top T users in the available set A = {u : a_u = 1 and |M_u| < N} get the item in their
  matching set M_u (eq. 12-13), kept in a result cache with an expiry. The upload returns them.
When a user visits (``retrieve``), M_u is a retrieval channel; ``rerank`` gives its items
s' = s + alpha * s_item (eq. 14) and lets at most ``budget`` of the batch's slots go to them.
At the end of each simulated day (``on_day_end``) the activity model is refitted on the arm's own
visit history, the user index is rebuilt with the day's creator-side two-tower, and the UAC
diagnostics are computed: hit rate with the activity model and without it (a shadow matching
from the same ranked lists), the |M_u| histogram with and without the store, and the new-item
coverage of creator-side and user-side retrieval.

The package: the channel (:mod:`.channel`), the creator side's models and indexes (:mod:`.creator_side`), the
UAC (:mod:`.uac`), the scoring equations (:mod:`.scoring`), the daily diagnostics (:mod:`.diagnostics`) and the
positive control, DualRec matching on the world's truth (:mod:`.oracle_match`). The trainer side is
:mod:`trainers.tasks.dualrec` with :mod:`trainers.models.creator_ranker`. Ray-free: the arm's Serve deployment
calls the channel's hooks through :class:`serving.stack.ArmPolicy`.
"""

from serving.channels.dualrec.channel import DualRecChannel
from serving.channels.dualrec.oracle_match import OracleMatchChannel

__all__ = ["DualRecChannel", "OracleMatchChannel"]
