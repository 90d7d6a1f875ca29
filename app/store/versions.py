"""The start-up rule every backend applies to the schema version it finds (pure)."""

from __future__ import annotations

from app.store.base import StoreError

NOT_CREATED = (
    "create it with `opentime db init` (with the same --config), or set create_database = true to let"
    " the server create an empty one"
)


def check_version(
    found: int, newest: int, label: str, *, upgrade: bool, backup: str = "the store", create: bool = True
) -> None:
    """Refuse a schema newer than ``newest`` always, and an older one unless ``upgrade`` (0: a new
    store, created at ``newest`` when ``create``): migrating a shared store is an operator's step, not
    a side effect, and so is creating an empty one where a server expected its data."""
    if found == 0 and not create:
        raise StoreError(f"{label} holds no Opentime store (it is empty): {NOT_CREATED}")
    if found > newest:
        raise StoreError(
            f"{label}: schema version {found} is newer than this Opentime knows ({newest}):"
            " run the Opentime release that wrote it, or a newer one"
        )
    if 0 < found < newest and not upgrade:
        raise StoreError(
            f"{label}: schema version {found} is older than this Opentime's ({newest}):"
            f" back {backup} up, then run `opentime db upgrade` (with the same --config)"
        )
