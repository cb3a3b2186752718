"""MCP discovery gateway: federates MCP registries and serves one governed catalog."""

__version__ = "0.1.0"
