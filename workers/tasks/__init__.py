"""One module per task type (or family of types)."""
