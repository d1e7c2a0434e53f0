"""The `sleep` job type: spends SLEEP_MS per row, for demos, tests and benchmarks."""
