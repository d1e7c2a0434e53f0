"""`./manage.sh up --rabbitmq-nodes 3`: the local cluster forms, replicates quorum queues on its three nodes, says
which node is down, and refuses to start on a port another broker holds."""

from __future__ import annotations

import os
import re
import subprocess
from urllib.parse import quote

import pika

from harness.broker import broker_is_up
from harness.cluster import MANAGE, Cluster
from harness.waiting import wait_until


def manage_functions(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"source {MANAGE}; {script}"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_cluster_on_the_port_of_a_broker_it_did_not_start_is_refused_naming_the_port_and_process(tmp_path) -> None:
    """The shared broker holds 5672: a cluster on the default ports stops before starting any node."""
    assert broker_is_up()
    done = manage_functions("RABBITMQ_NODES=3; ensure_rabbitmq_cluster", RABBITMQ_CLUSTER_DIR=str(tmp_path))
    assert done.returncode != 0
    assert re.search(r"port 5672 \(for rabbit-1@localhost\) is held by pid \d+ \(beam\.smp", done.stderr), done.stderr
    assert "which manage.sh did not start" in done.stderr
    assert not list(tmp_path.glob("rabbit-*.pid")), "no node was started"


def test_rabbitmq_nodes_must_be_a_positive_number() -> None:
    done = manage_functions("parse_up_args --rabbitmq-nodes three")
    assert done.returncode != 0 and "--rabbitmq-nodes needs a positive whole number, got 'three'" in done.stderr


def test_three_nodes_form_one_cluster_that_replicates_a_quorum_queue_and_status_shows_a_dead_node(
    cluster: Cluster,
) -> None:
    assert cluster.running_nodes() == {"rabbit-1@localhost", "rabbit-2@localhost", "rabbit-3@localhost"}
    queue = "cluster-check"
    connection = pika.BlockingConnection(pika.URLParameters(cluster.amqp_urls()[1]))
    try:
        connection.channel().queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        connection.close()
    info = cluster.request("GET", f"/queues/{quote(cluster.vhost, safe='')}/{queue}").json()
    assert sorted(info["members"]) == sorted(node.name for node in cluster.nodes)
    leader = wait_until(lambda: cluster.leader(queue), timeout=10, what=f"the leader of {queue}")

    def status() -> str:
        env = {"RABBITMQ_BASE_PORT": "5682", "RABBITMQ_MANAGEMENT_BASE_PORT": "15682"}
        return manage_functions("cluster_status", RABBITMQ_CLUSTER_DIR=str(cluster.directory), **env).stdout

    # The queue list is the statistics database's, refreshed every 500 ms (collect_statistics_interval).
    up = rf"{re.escape(leader.name)}\s+up\s+pid \d+\s+AMQP {leader.amqp_port}.*leads [1-9]\d* queues"
    wait_until(lambda: re.search(up, status()), timeout=10, what="status to show the queue's leader")

    cluster.kill(leader)
    try:
        assert re.search(rf"{re.escape(leader.name)}\s+DOWN", status())
        cluster.new_leader(queue, leader)
    finally:
        cluster.restart(leader)
