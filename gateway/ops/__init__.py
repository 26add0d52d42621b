"""Running the gateway: request ids, log lines, metrics and trusted proxy headers."""
