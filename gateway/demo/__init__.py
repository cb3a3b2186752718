"""Package data: the bundled offline demo config directory."""
