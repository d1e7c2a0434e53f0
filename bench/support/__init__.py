"""What only the benchmarks use: the peers' and the plain consumers' entry points, draining a queue, and the
results files the README's tables are made from. The parts tests share with benchmarks are in `harness/`."""
