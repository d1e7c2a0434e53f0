"""Helpers shared by the test suite: waiting on conditions, the real broker, real processes."""
