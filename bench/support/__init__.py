"""Helpers shared by the benchmarks and the tests (not benchmarks themselves): the real broker, real
processes, the whole local stack, waiting on conditions, PostgreSQL, the Kubernetes emulator, results files.
The benchmarks never import the tests."""
