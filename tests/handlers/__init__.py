"""Handlers used only by tests (configured with a dotted `handler` path)."""
