"""The arms' retrieval channels: the Channel base class (:mod:`.base`), the base stack's channels (:mod:`.basic`), the
cold-item index (:mod:`.cold`) and one module or package per strategy (:mod:`.next_user`, :mod:`.ihm`, :mod:`.dualrec`)."""
