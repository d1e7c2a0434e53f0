"""The real parts a test or a benchmark drives on this machine: a private RabbitMQ vhost (`broker`), real
processes on free ports (`processes`), the whole local stack (`stack`), waiting on a condition with a deadline
(`waiting`), PostgreSQL (`postgres`), the emulated Kubernetes API server (`k8s_emulator`), job-type configs
(`configs`) and resource measurements (`measure`).

It is its own package, not under `tests/` or `bench/`, because both use it and neither should import the other.
"""
