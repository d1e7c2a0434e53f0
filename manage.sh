#!/usr/bin/env bash
# The one entry point for people: ./manage.sh help
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
RUN="$ROOT/.run"
PRODUCER_ADDR="${PRODUCER_HOST:-127.0.0.1}:${PRODUCER_PORT:-8000}"
SCALER_ADDR="${SCALER_HOST:-127.0.0.1}:${SCALER_PORT:-8080}"
RABBITMQ_CONF_DIR=/etc/rabbitmq/conf.d
K8S_NAMESPACE="${K8S_NAMESPACE:-queue-autoscaler}"

log() { printf '[manage] %s\n' "$*" >&2; }
die() { printf '[manage] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi
}

apt_install() {
  # Installs the Debian packages given, once, without prompts.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # Debian's postinst tries to start the service; in a container without an
  # init system that fails harmlessly, we start RabbitMQ ourselves below.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
  local stamp="$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
  [ -f "$stamp" ] && return 0
  command -v python3 >/dev/null || die "python3 is required (3.11 or newer)"
  [ -x "$PY" ] || { log "creating .venv"; python3 -m venv "$VENV"; }
  log "installing Python packages into .venv"
  "$PY" -m pip install -q --upgrade pip >/dev/null
  "$PY" -m pip install -q -e ".[test]"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
}

rabbitmq_running() { rabbitmq-diagnostics -q check_running >/dev/null 2>&1; }

ensure_rabbitmq() {
  # Installs RabbitMQ with its management plugin and starts it if it is not running.
  # Leaves a marker so that `down` (and `test`) stop only a broker they started.
  apt_install rabbitmq-server curl
  if [ ! -f "$RABBITMQ_CONF_DIR/50-queue-autoscaler.conf" ]; then
    as_root mkdir -p "$RABBITMQ_CONF_DIR"
    # The management API refreshes queue counts every collect_statistics_interval
    # (5 s by default); the scaler reacts within a tick only if they are fresh.
    printf 'collect_statistics_interval = 500\nmanagement.rates_mode = none\n' |
      as_root tee "$RABBITMQ_CONF_DIR/50-queue-autoscaler.conf" >/dev/null
  fi
  if ! grep -q rabbitmq_management /etc/rabbitmq/enabled_plugins 2>/dev/null; then
    as_root rabbitmq-plugins enable --offline rabbitmq_management >/dev/null
  fi
  mkdir -p "$RUN"
  if rabbitmq_running; then
    return 0
  fi
  log "starting RabbitMQ"
  as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  local node
  node="rabbit@$(hostname -s)"
  as_root rabbitmqctl wait --timeout 120 "/var/lib/rabbitmq/mnesia/$node.pid" >/dev/null ||
    die "RabbitMQ did not start; see /var/log/rabbitmq/"
  touch "$RUN/rabbitmq.started-by-manage"
  wait_http "http://127.0.0.1:15672/api/overview" 60 -u guest:guest || die "RabbitMQ management API did not answer"
}

# A local cluster (./manage.sh up --rabbitmq-nodes N): node i is rabbit-i@localhost on the base ports + i - 1.
# The base ports and the name prefix are settings so that a cluster can run beside another broker (the tests use
# 5682, 15682, 25682).
RABBITMQ_NODES=1
RABBITMQ_BASE_PORT="${RABBITMQ_BASE_PORT:-5672}"
RABBITMQ_MANAGEMENT_BASE_PORT="${RABBITMQ_MANAGEMENT_BASE_PORT:-15672}"
# RabbitMQ's own rule: the inter-node (Erlang distribution) port is the AMQP port + 20000.
RABBITMQ_DIST_BASE_PORT="${RABBITMQ_DIST_BASE_PORT:-$((RABBITMQ_BASE_PORT + 20000))}"
# Each node's data and logs in CLUSTER_DIR/<node>/, its pid in CLUSTER_DIR/<node>.pid, the shared cookie in CLUSTER_DIR.
CLUSTER_DIR="${RABBITMQ_CLUSTER_DIR:-$RUN/rabbitmq}"
RABBITMQ_NODE_PREFIX="${RABBITMQ_NODE_PREFIX:-rabbit}"
RABBITMQ_BIN=/usr/lib/rabbitmq/bin

node_id() { echo "$RABBITMQ_NODE_PREFIX-$1"; }
node_name() { echo "$(node_id "$1")@localhost"; }
node_amqp_port() { echo $((RABBITMQ_BASE_PORT + $1 - 1)); }
node_management_port() { echo $((RABBITMQ_MANAGEMENT_BASE_PORT + $1 - 1)); }
node_dist_port() { echo $((RABBITMQ_DIST_BASE_PORT + $1 - 1)); }
node_pidfile() { echo "$CLUSTER_DIR/$(node_id "$1").pid"; }

node_pid() {
  # The OS pid of node I if it is running (from its pid file), else nothing.
  local pidfile pid
  pidfile="$(node_pidfile "$1")"
  [ -s "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

node_env() {
  # node_env I COMMAND...: runs a RabbitMQ script with node I's name, ports, directories and the cluster's cookie
  # (HOME holds .erlang.cookie). Debian's /usr/sbin wrappers switch to the rabbitmq user and its
  # /var/lib/rabbitmq; the scripts under /usr/lib/rabbitmq/bin run as whoever calls them.
  local i=$1 dir="$CLUSTER_DIR/$(node_id "$1")"
  shift
  env HOME="$CLUSTER_DIR" RABBITMQ_NODENAME="$(node_name "$i")" RABBITMQ_NODE_PORT="$(node_amqp_port "$i")" \
    RABBITMQ_DIST_PORT="$(node_dist_port "$i")" RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$(node_pidfile "$i")" RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_CONFIG_FILES="$dir/conf.d" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    "$@"
}

node_ctl() { local i=$1; shift; node_env "$i" "$RABBITMQ_BIN/rabbitmqctl" -q -n "$(node_name "$i")" "$@"; }

port_holder() {
  # Who listens on TCP port P: "pid N (command)", or nothing when the port is free.
  ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/pid \2 (\1)/p' | head -n 1
}

check_node_ports() {
  # Refuses to start node I when another process holds one of its ports (a broker this script did not start).
  local i=$1 port holder ours
  ours="$(node_pid "$i" || true)"
  for port in "$(node_amqp_port "$i")" "$(node_management_port "$i")" "$(node_dist_port "$i")"; do
    holder="$(port_holder "$port")"
    [ -z "$holder" ] && continue
    [ -n "$ours" ] && [ "$holder" = "pid $ours (beam.smp)" ] && continue
    die "port $port (for $(node_name "$i")) is held by $holder, which manage.sh did not start; stop it, or set RABBITMQ_BASE_PORT / RABBITMQ_MANAGEMENT_BASE_PORT / RABBITMQ_DIST_BASE_PORT"
  done
}

write_node_config() {
  # Node I's own rabbitmq.conf (loopback listeners on its ports, the scaler's statistics interval) and plugins.
  local i=$1 dir="$CLUSTER_DIR/$(node_id "$1")"
  mkdir -p "$dir/log" "$dir/conf.d"
  cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$(node_amqp_port "$i")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(node_management_port "$i")
collect_statistics_interval = 500
management.rates_mode = none
CONF
  echo '[rabbitmq_management].' >"$dir/enabled_plugins"
}

ensure_cluster_cookie() {
  # One Erlang cookie for the cluster's nodes and the CLI (0400): a node accepts any peer that knows it.
  mkdir -p "$CLUSTER_DIR"
  chmod 700 "$CLUSTER_DIR"
  [ -s "$CLUSTER_DIR/.erlang.cookie" ] && return 0
  (umask 277 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$CLUSTER_DIR/.erlang.cookie")
}

start_node() {
  # Starts node I in the background unless it is running; a node that restarts rejoins its cluster by itself.
  local i=$1
  check_node_ports "$i"
  node_pid "$i" >/dev/null && { log "$(node_name "$i") already running (pid $(node_pid "$i"))"; return 0; }
  rm -f "$(node_pidfile "$i")"
  write_node_config "$i"
  node_env "$i" setsid nohup "$RABBITMQ_BIN/rabbitmq-server" </dev/null \
    >"$CLUSTER_DIR/$(node_id "$i")/log/startup.log" 2>&1 &
  log "starting $(node_name "$i") (AMQP $(node_amqp_port "$i"), management $(node_management_port "$i")), log: $CLUSTER_DIR/$(node_id "$i")/log/"
}

wait_node() {
  # Waits (with a deadline) until node I runs RabbitMQ and its management API answers.
  local i=$1
  node_ctl "$i" wait --timeout 120 "$(node_pidfile "$i")" >/dev/null ||
    die "$(node_name "$i") did not start; see $CLUSTER_DIR/$(node_id "$i")/log/"
  wait_http "http://127.0.0.1:$(node_management_port "$i")/api/overview" 60 -u guest:guest ||
    die "$(node_name "$i")'s management API did not answer on port $(node_management_port "$i")"
}

join_node() {
  # Joins node I to node 1's cluster unless it is already a member (a restarted cluster keeps its membership).
  local i=$1
  node_ctl 1 cluster_status --formatter json | grep -q "\"$(node_name "$i")\"" && return 0
  log "joining $(node_name "$i") to $(node_name 1)"
  node_ctl "$i" stop_app >/dev/null
  node_ctl "$i" join_cluster "$(node_name 1)" >/dev/null || die "$(node_name "$i") could not join $(node_name 1)"
  node_ctl "$i" start_app >/dev/null
}

ensure_rabbitmq_cluster() {
  # Starts RABBITMQ_NODES nodes from Debian's rabbitmq-server and clusters them. All start at once: a node
  # that restarts waits for the peer that stopped last, so starting them one after another could deadlock.
  apt_install rabbitmq-server curl
  ensure_cluster_cookie
  local i
  for i in $(seq 1 "$RABBITMQ_NODES"); do check_node_ports "$i"; done
  for i in $(seq 1 "$RABBITMQ_NODES"); do start_node "$i"; done
  for i in $(seq 1 "$RABBITMQ_NODES"); do wait_node "$i"; done
  for i in $(seq 2 "$RABBITMQ_NODES"); do join_node "$i"; done
  log "RabbitMQ cluster of $RABBITMQ_NODES nodes up: $(cluster_amqp_addresses)"
}

cluster_urls() {
  # cluster_urls BEFORE PORT_FUNCTION AFTER: every node's URL, comma-separated (BEFORE<port>AFTER).
  local i out=()
  for i in $(seq 1 "$RABBITMQ_NODES"); do out+=("$1$("$2" "$i")$3"); done
  (IFS=,; echo "${out[*]}")
}

cluster_amqp_addresses() { cluster_urls 127.0.0.1: node_amqp_port ""; }

cluster_node_numbers() {
  # The numbers of the nodes that have a pid file in CLUSTER_DIR (those this script started).
  local pidfile
  for pidfile in "$CLUSTER_DIR/$RABBITMQ_NODE_PREFIX"-*.pid; do
    [ -e "$pidfile" ] || continue
    pidfile="${pidfile##*/"$RABBITMQ_NODE_PREFIX"-}"
    echo "${pidfile%.pid}"
  done | sort -n
}

stop_rabbitmq_cluster() {
  # Stops every node this script started (its pid file), last node first; waits for each to exit.
  local i pid
  for i in $(cluster_node_numbers | sort -rn); do
    if pid="$(node_pid "$i")"; then
      log "stopping $(node_name "$i") (pid $pid)"
      node_ctl "$i" stop >/dev/null 2>&1 || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(node_pidfile "$i")"
  done
}

cluster_status() {
  # One line per node this script started: up or down, its ports, how many queues it leads.
  local numbers i pid leaders="" port
  numbers="$(cluster_node_numbers)"
  [ -n "$numbers" ] || return 0
  for i in $numbers; do
    port="$(node_management_port "$i")"
    if node_pid "$i" >/dev/null && [ -z "$leaders" ]; then
      leaders="$(curl -fsS --max-time 3 -u guest:guest "http://127.0.0.1:$port/api/queues?columns=node" 2>/dev/null || true)"
    fi
  done
  for i in $numbers; do
    if pid="$(node_pid "$i")"; then
      printf '  %-20s up    pid %-7s AMQP %s  management %s  leads %s queues\n' "$(node_name "$i")" "$pid" \
        "$(node_amqp_port "$i")" "$(node_management_port "$i")" "$(grep -o "\"$(node_name "$i")\"" <<<"$leaders" | wc -l)"
    else
      printf '  %-20s DOWN  AMQP %s  management %s\n' "$(node_name "$i")" "$(node_amqp_port "$i")" "$(node_management_port "$i")"
    fi
  done
}

BROKER_USERS="$RUN/rabbitmq"

ensure_broker_users() {
  # One RabbitMQ user each for the producer, the scaler (monitoring tag) and every job type's workers, with
  # only the permissions it uses (scaler/broker_users.py); their URLs in .run/rabbitmq/ (0600 files, 0700 dir).
  "$PY" -m scaler.local_broker_users "$BROKER_USERS" || die "could not create the broker users (see above)"
}

stop_rabbitmq_if_ours() {
  if [ -f "$RUN/rabbitmq.started-by-manage" ]; then
    log "stopping RabbitMQ (started by manage.sh)"
    as_root rabbitmqctl stop >/dev/null 2>&1 || true
    rm -f "$RUN/rabbitmq.started-by-manage"
  fi
}

wait_http() {
  # wait_http URL SECONDS [curl args...]: true once URL answers 2xx.
  local url=$1 seconds=$2 deadline
  shift 2
  deadline=$(( $(date +%s) + seconds ))
  until curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null; do
    [ "$(date +%s)" -ge "$deadline" ] && return 1
    sleep 0.3
  done
}

start_service() {
  # start_service NAME URL -- command...: runs it in the background unless its pid is alive.
  local name=$1 url=$2
  shift 3
  local pidfile="$RUN/$name.pid"
  mkdir -p "$RUN/logs"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "$name already running (pid $(cat "$pidfile"))"
  else
    # The output goes through a rotating writer, so the log stays within SERVICE_LOG_MAX_BYTES x (1 + SERVICE_LOG_BACKUPS).
    # Neither holds on to this script's stdout or stderr, so `./manage.sh up | tee` returns once `up` is done.
    # The pipe reads the service's output on its stdin (never </dev/null: it would exit at once and stay the
    # service's <defunct> child, the output lost); it is the service's child and ends when the service does.
    nohup "$@" </dev/null > >(exec "$PY" -m common.log_pipe "$RUN/logs/$name.log" >/dev/null 2>&1) 2>&1 &
    echo $! >"$pidfile"
    log "$name started (pid $!), log: .run/logs/$name.log"
  fi
  wait_http "$url" 60 || die "$name did not answer at $url; see .run/logs/$name.log"
}

stop_service() {
  local name=$1 pidfile="$RUN/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

private_run_dir() {
  # .run holds the token, uploads.db (dead rows' bodies), sales.db and the logs: 0700, its files 0600, and
  # everything this script starts from here on (services, the workers they start) creates files 0600.
  umask 077
  mkdir -p "$RUN/logs"
  chmod 700 "$RUN"
  chmod -R go-rwx "$RUN"
}

stored_token() {
  # PRODUCER_TOKEN from the environment, else the one `up` stored (for commands that call the services).
  if [ -z "${PRODUCER_TOKEN:-}" ] && [ -s "$RUN/producer.token" ]; then
    PRODUCER_TOKEN="$(cat "$RUN/producer.token")"
    export PRODUCER_TOKEN
  fi
}

ensure_token() {
  # The token for uploads and the dashboard: PRODUCER_TOKEN if set, else the one stored in .run (mode 600),
  # generated on the first `up`. Every client sends it, loopback included.
  stored_token
  if [ -z "${PRODUCER_TOKEN:-}" ]; then
    private_run_dir
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RUN/producer.token")
    log "generated a token in .run/producer.token"
    stored_token
  fi
  export PRODUCER_TOKEN
}

parse_up_args() {
  # up [--rabbitmq-nodes N]: one node (Debian's own, as always) or a cluster of N nodes started by this script.
  while [ $# -gt 0 ]; do
    case "$1" in
      --rabbitmq-nodes)
        [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--rabbitmq-nodes needs a positive whole number, got '${2:-}'"
        RABBITMQ_NODES=$2
        shift 2 ;;
      *) die "up: unknown argument '$1' (usage: ./manage.sh up [--rabbitmq-nodes N])" ;;
    esac
  done
}

ensure_broker() {
  # Debian's single node, or the cluster: the broker users are then created through node 1 (users replicate).
  if [ "$RABBITMQ_NODES" -eq 1 ]; then
    ensure_rabbitmq
    return 0
  fi
  ensure_rabbitmq_cluster
  # Every node in the lists the broker users' URL files are written from (RABBITMQ_URLS wins over RABBITMQ_URL).
  export RABBITMQ_ADMIN_API_URL="${RABBITMQ_ADMIN_API_URL:-http://guest:guest@localhost:$(node_management_port 1)/api}"
  export RABBITMQ_URL="${RABBITMQ_URL:-amqp://guest:guest@localhost:$(node_amqp_port 1)/%2F}"
  export RABBITMQ_ADMIN_API_URLS="${RABBITMQ_ADMIN_API_URLS:-$(cluster_urls http://guest:guest@localhost: node_management_port /api)}"
  export RABBITMQ_URLS="${RABBITMQ_URLS:-$(cluster_urls amqp://guest:guest@localhost: node_amqp_port /%2F)}"
  # Rows outlive a node only in quorum queues: the default queue type on a cluster (a type may still say classic).
  export QUEUE_TYPE="${QUEUE_TYPE:-quorum}"
}

cmd_up() {
  parse_up_args "$@"
  ensure_venv
  private_run_dir
  ensure_broker
  ensure_token
  ensure_broker_users
  # Each service its own broker user, in its environment (never on a command line other users can read).
  RABBITMQ_URLS="$(cat "$BROKER_USERS/producer.url")" \
    start_service producer "http://$PRODUCER_ADDR/healthz" -- "$PY" -m producer
  if [ -f scaler/__main__.py ]; then
    RABBITMQ_URLS="$(cat "$BROKER_USERS/scaler.url")" RABBITMQ_API_URLS="$(cat "$BROKER_USERS/scaler-api.url")" \
      SCALER_WORKER_CREDENTIALS_DIR="$BROKER_USERS/workers" \
      start_service scaler "http://$SCALER_ADDR/healthz" -- "$PY" -m scaler --backend local
  fi
  # Where the token is for the curl line: the file, unless PRODUCER_TOKEN came from the environment.
  local from='$(cat .run/producer.token)' where=".run/producer.token"
  [ "$(cat "$RUN/producer.token" 2>/dev/null)" = "$PRODUCER_TOKEN" ] || { from='$PRODUCER_TOKEN'; where="PRODUCER_TOKEN"; }
  echo
  [ -f scaler/__main__.py ] && echo "  dashboard:  http://$SCALER_ADDR/?token=$PRODUCER_TOKEN   (one-click login)"
  echo "  token:      $PRODUCER_TOKEN   ($where; every request sends it)"
  echo "  producer:   curl -H \"Authorization: Bearer $from\" -F file=@data.csv http://$PRODUCER_ADDR/upload"
  echo "  rabbitmq:   http://127.0.0.1:$(node_management_port 1)/  (guest / guest)"
  [ "$RABBITMQ_NODES" -eq 1 ] || echo "  nodes:      $(cluster_amqp_addresses)   (./manage.sh status)"
  echo "  stop with:  ./manage.sh down"
}

cmd_down() {
  stop_service scaler
  # Workers outlive a scaler restart on purpose (the next scaler adopts them); `down` ends them too.
  [ -x "$PY" ] && [ -d "$RUN/scaler/workers" ] && "$PY" -m scaler stop-workers || true
  stop_service producer
  stop_rabbitmq_if_ours
  stop_rabbitmq_cluster
}

cmd_test() {
  ensure_venv
  # chromium for the dashboard tests; postgresql for the upload store tests (pytest-postgresql starts its own server).
  apt_install chromium fonts-dejavu-core postgresql
  ensure_rabbitmq
  local status=0
  if [ $# -eq 0 ]; then
    log "lint and format check (ruff)"
    { "$PY" -m ruff check . && "$PY" -m ruff format --check .; } ||
      { log "ruff found problems (fix: .venv/bin/ruff check --fix . && .venv/bin/ruff format .)"; status=1; }
  fi
  "$PY" -m pytest "$@" || status=$?
  stop_rabbitmq_if_ours
  return $status
}

cmd_submit() {
  # submit FILE [JOB_TYPE] [--wait]: with an Idempotency-Key, retried with the same key after a 503 or a hang-up
  [ $# -ge 1 ] || die "usage: ./manage.sh submit FILE [JOB_TYPE] [--wait]"
  ensure_venv
  stored_token
  "$PY" -m uploads.cli --url "http://$PRODUCER_ADDR" submit "$@"
}

cmd_bench() {
  # bench/readme.py is not a benchmark: it writes the README from their results (./manage.sh readme).
  local names
  names="$(cd bench && ls *.py | sed 's/\.py$//' | grep -vx readme | tr '\n' ' ')"
  [ $# -ge 1 ] || die "usage: ./manage.sh bench NAME (one of: $names)"
  local name=$1
  shift
  [ -f "bench/$name.py" ] && [ "$name" != readme ] || die "no benchmark bench/$name.py (one of: $names)"
  ensure_venv
  ensure_bench_extras
  ensure_rabbitmq
  "$PY" "bench/$name.py" "$@"
}

ensure_bench_extras() {
  # The worker benchmark's peers (dramatiq, Celery): the `bench` optional dependencies, installed on first use.
  "$PY" -c "import dramatiq, celery" 2>/dev/null && return 0
  log "installing the benchmark peers (.[bench]) into .venv"
  "$PY" -m pip install -q -e ".[test,bench]"
}

cmd_readme() {
  # Regenerate every generated part of the README (benchmark, fault, upload-record and simulator tables) from
  # bench/results/ (nothing is run).
  ensure_venv
  "$PY" -m bench.readme "$@"
}

# The images' tag: set once, in infra/k8s/kustomization.yaml (images: newTag).
IMAGE_TAG="$(sed -n 's/^ *newTag: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' infra/k8s/kustomization.yaml | head -n 1)"
IMAGES=(
  "producer/Dockerfile queue-autoscaler/producer"
  "scaler/Dockerfile queue-autoscaler/scaler"
  "workers/sales/Dockerfile queue-autoscaler/worker-sales"
  "workers/sleep/Dockerfile queue-autoscaler/worker-sleep"
)

cmd_images() {
  # Builds every image from the repository root (needs a Docker engine).
  command -v docker >/dev/null || die "docker is not installed"
  for entry in "${IMAGES[@]}"; do
    set -- $entry
    log "building $2:$IMAGE_TAG from $1"
    docker build -f "$1" -t "$2:$IMAGE_TAG" .
  done
}

apply_jobs_config() {
  # The ConfigMap producer, scaler and workers mount; a changed file is picked up without restarts.
  kubectl -n "$K8S_NAMESPACE" create configmap jobs-config --from-file=jobs.config.json \
    --dry-run=client -o yaml | kubectl -n "$K8S_NAMESPACE" apply -f -
}

ensure_python() {
  # The venv's python for helper commands; installs it only when it is missing.
  [ -x "$PY" ] || ensure_venv
}

cmd_k8s_up() {
  ensure_python
  # Refuse before touching anything while a Secret in the cluster holds an example placeholder.
  K8S_NAMESPACE="$K8S_NAMESPACE" "$PY" -m scaler.deploy_secrets check || die "not deploying (see above)"
  command -v kubectl >/dev/null || die "kubectl is not installed"
  kubectl apply -f infra/k8s/namespace.yaml
  K8S_NAMESPACE="$K8S_NAMESPACE" "$PY" -m scaler.deploy_secrets ensure
  apply_jobs_config
  # Everything but the Secrets: the placeholders in secrets.yaml are never applied.
  kubectl kustomize infra/k8s | "$PY" -m scaler.deploy_secrets strip | kubectl apply -f -
  kubectl -n "$K8S_NAMESPACE" rollout status statefulset/rabbitmq --timeout=300s
  kubectl -n "$K8S_NAMESPACE" rollout status deployment/producer --timeout=300s
  kubectl -n "$K8S_NAMESPACE" rollout status deployment/scaler --timeout=300s
  echo
  echo "  dashboard: kubectl -n $K8S_NAMESPACE port-forward svc/scaler 8080:8080   then http://127.0.0.1:8080/"
  echo "  uploads:   kubectl -n $K8S_NAMESPACE port-forward svc/producer 8000:8000 then"
  echo "             curl -H \"Authorization: Bearer \$TOKEN\" -F file=@data.csv http://127.0.0.1:8000/upload"
  echo "  token:     TOKEN=\$(kubectl -n $K8S_NAMESPACE get secret queue-autoscaler-secrets -o jsonpath='{.data.producer-token}' | base64 -d)"
}

cmd_k8s_config() {
  command -v kubectl >/dev/null || die "kubectl is not installed"
  "$PY" -c "from common import load_config; load_config('jobs.config.json')" 2>/dev/null ||
    { ensure_venv; "$PY" -c "from common import load_config; load_config('jobs.config.json')"; }
  apply_jobs_config
  log "jobs.config.json applied; producer and scaler pick it up within a minute (kubelet sync), no restart"
}

cmd_k8s_down() {
  command -v kubectl >/dev/null || die "kubectl is not installed"
  kubectl delete -k infra/k8s --ignore-not-found
  kubectl delete namespace "$K8S_NAMESPACE" --ignore-not-found
}

cmd_help() {
  cat <<EOF
usage: ./manage.sh COMMAND [ARGS]

  up [--rabbitmq-nodes N]
                   install what is missing, start RabbitMQ (N > 1: a local cluster of N nodes, rabbit-1@localhost
                   on AMQP 5672, management 15672, then the next ports), producer and scaler, print the token and a
                   login link
  down             stop what 'up' started
  status           one-screen summary of queues and workers
  watch            the same summary, refreshed every second
  pause T          stop starting workers for job type T; running ones finish their row (rows stay queued)
  resume T         scale job type T normally again (after pause or drain)
  drain T          work off job type T's backlog, then hold it at zero workers
  retry T          probe a failing job type T at once instead of after its backoff
  submit FILE [T] [--wait]
                   upload a CSV file (to job type T); --wait shows its progress until it is final
                   (exit 1 when rows ended dead, 3 when cancelled)
  uploads          recent uploads, newest first (--job-type T, --state S)
  sample N         print a sample sales CSV with N rows
  test [ARGS]      run the whole test suite (pytest ARGS)
  bench NAME       run a benchmark (ingest, worker, sales, reaction, tick, uploads, simulate, queues); writes bench/results/NAME.json
  readme           regenerate the README's generated tables from bench/results/ (--check: only compare)
  simulate TRACE [--config FILE] [--format NAME] [--speedup K] [--start S --hours H]
           [--backend local|kubernetes] [--policies project,keda,fixed:N] [--out DIR]
           [--sweep NAME=V1,V2 ...] [--target-p95-wait S]
                   replay a trace through the real scaling policy (and KEDA and fixed-pool models) on a
                   virtual clock: DIR/summary.json, DIR/report.html and a table (see docs/simulation.md)
  replay TRACE [--speedup K] [--start S --hours H] [--job-type sleep]
                   send the same trace to the running local stack (start it with
                   WORKER_LOG_LEVEL=debug ./manage.sh up) and print real against simulated figures
  images           build the container images (needs Docker)
  k8s-up           deploy the stack to the current kubectl context
  k8s-config       apply a changed jobs.config.json to the cluster
  k8s-down         remove the stack from the cluster
EOF
}

main() {
  local command=${1:-help}
  shift || true
  case "$command" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    test) cmd_test "$@" ;;
    submit) cmd_submit "$@" ;;
    uploads) ensure_venv; stored_token; "$PY" -m uploads.cli --url "http://$PRODUCER_ADDR" list "$@" ;;
    status) cluster_status; ensure_venv; stored_token; "$PY" -m scaler status --url "http://$SCALER_ADDR" "$@" ;;
    watch) ensure_venv; stored_token; "$PY" -m scaler status --url "http://$SCALER_ADDR" --watch "$@" ;;
    pause | resume | drain | retry)
      [ $# -eq 1 ] || die "usage: ./manage.sh $command JOB_TYPE"
      ensure_venv; stored_token; "$PY" -m scaler control "$command" "$1" --url "http://$SCALER_ADDR" ;;
    sample) ensure_venv; "$PY" -m workers.sample "$@" ;;
    bench) cmd_bench "$@" ;;
    simulate) ensure_venv; "$PY" -m simulator "$@" ;;
    replay) ensure_venv; stored_token; PRODUCER_ADDR="$PRODUCER_ADDR" SCALER_ADDR="$SCALER_ADDR" "$PY" -m simulator.replay "$@" ;;
    readme) cmd_readme "$@" ;;
    images) cmd_images "$@" ;;
    k8s-up) cmd_k8s_up "$@" ;;
    k8s-config) cmd_k8s_config "$@" ;;
    k8s-down) cmd_k8s_down "$@" ;;
    help | -h | --help) cmd_help ;;
    *) cmd_help; die "unknown command: $command" ;;
  esac
}

# Sourcing the script (the tests do) defines its functions without running a command.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
