"""MCP discovery gateway: federates MCP registries and serves one governed catalog."""

__version__ = "0.1.0"


def compiled() -> bool:
    """Whether the snapshot build runs compiled (built with GATEWAY_COMPILE=1, see setup.py)."""
    from gateway import catalog

    return not (catalog.__file__ or "").endswith(".py")
