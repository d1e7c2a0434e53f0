"""Helpers of the test suite alone (fault report, proxies, harnesses); what the benchmarks share with it
(broker, processes, stack, waiting, PostgreSQL, the Kubernetes emulator) is in bench/support."""
