"""Small pieces shared by the hub-sidecars services: layered configuration, logging, secrets."""

from importlib.metadata import PackageNotFoundError, version


def suite_version() -> str:
    """The installed hub-sidecars version ("unknown" when run from a bare checkout)."""
    try:
        return version("hub-sidecars")
    except PackageNotFoundError:
        return "unknown"
