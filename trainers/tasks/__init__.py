"""The strategies' training tasks: the online ones an arm's learner trains after its base models
(:class:`trainers.tasks.base.Task`: Next-User, IHM, DualRec) and the offline IHM protocol's retrieval task."""
