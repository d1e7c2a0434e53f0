"""A policy simulator: real traces replayed through the real scaling policy on a virtual clock.

`simulator.traces` turns a trace file into uploads (rows arriving at job types),
`simulator.engine` replays them through `scaler.policy.decide` and
`scaler.budget.allocate` (imported, never copied) beside models of two peers,
and `simulator.results` / `simulator.report` turn a run into `summary.json`,
a terminal table and a self-contained HTML page. Every modelling assumption is
listed in `docs/simulation.md` and printed in the report.
"""
