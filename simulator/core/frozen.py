"""The base of every configuration type: a frozen pydantic model that refuses unknown fields."""

from pydantic import BaseModel, ConfigDict


class FrozenConfig(BaseModel):
    """Immutable once built (``model_copy`` and ``Scenario._revalidated`` make changed copies); a typo in a field name
    is an error, not a silently ignored key."""

    model_config = ConfigDict(frozen=True, extra="forbid")
