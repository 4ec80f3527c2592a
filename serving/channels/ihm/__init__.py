"""The IHM channel (papers/item_history_model_ihm.txt sections 3-4): an HNSW index of cold items' IHM embeddings,
kept fresh by real-time re-inference, queried with the requesting user's SASRec vector.

Real-time serving, in simulated (event) time:

* **Feature logging.** Feedback appends to {item: users who liked/commented} (the arm's
  :class:`serving.features.FeatureStore` item sequences) and {user: items} (its user sequences).
* **Inference triggers.** A like/comment on a cold item triggers a re-inference of its embedding at
  the action's time; so does every ``impressions_trigger``-th impression (at the feedback batch's
  time). **Rate limit**: two inferences of an item are at least ``rate_limit_s`` apart; a trigger
  inside the gap queues one inference for the moment the gap expires (further triggers merge into
  it), run at the first later feedback, request batch or day end whose time has passed it. An
  inference at time T reads the item's history up to T.
* **KV store and index.** Each inference writes (vector, inference time) to the KV store
  (``kv_vec``, ``kv_ts``, by item row) and the vector to the ANN index in place (hnswlib replaces a
  label's vector), one batch per call. Items enter at upload with their empty-history embedding
  (E_S). At the end of each day the index is rebuilt from the KV store with the still-cold items
  (no inference: a compaction, like the paper's daily global index update).
* **ATS.** For every like/comment on an indexed (cold) item, the simulated time until an inference
  whose history includes it has updated the index: inference time minus action time. Per day
  ``ihm.ats_p50_min`` / ``ihm.ats_p95_min`` and over the run so far ``ihm.run.ats_p50_min`` /
  ``ihm.run.ats_p95_min`` (pooled over every sample, not averaged over days). An action the arm sees only
  after an inference of its item timed later than the action (the driver serves a tick in rounds, not
  in time order) is *late*: it waits for the next allowed inference; ``ihm.late`` counts them and the
  ``ats_ontime_*`` percentiles leave them out.

Model weights come from the arm's :class:`trainers.tasks.ihm_online.IHMTask` through ``on_weights``; a
weight load re-infers every cold item and rebuilds the index. The task freezes after its
``train_days`` (its weights stop changing, so there is nothing new to load), after which embeddings
change only through new interactions: the inductive setting. Ablations (``IHMArmSpec``):
``realtime=False`` infers nothing on feedback and re-infers every cold item once a day, at the
day's end, where it also applies the day's weights (daily batch inference); ``static_only=True``
embeds items by E_S alone and does no feedback work.

The channel is :class:`serving.channels.ihm.channel.IHMChannel`; its rate limit and ATS bookkeeping are in
:mod:`serving.channels.ihm.realtime`. Ray-free: the arm's Serve deployment calls its hooks through
:class:`serving.stack.ArmPolicy`.
"""

from serving.channels.ihm.channel import IHMChannel

__all__ = ["IHMChannel"]
