#!/usr/bin/env bash
# deploy/local-kafka.sh — a real, single-node Apache Kafka broker (KRaft mode) for
# local development and StreamGuard's integration tests. No docker, no tarball
# download: the broker's jars come from Maven Central through the machine's `mvn`.
#
# Usage:
#   deploy/local-kafka.sh start     fetch jars (first time only), format storage (first
#                                   time only), start the broker in the background and
#                                   wait until it answers a metadata request (Kafka's own
#                                   kafka-topics --list); prints bootstrap=127.0.0.1:PORT.
#                                   Already running and answering -> says so, exits 0.
#                                   Not answering within KAFKA_START_TIMEOUT -> prints the
#                                   log tail, stops the half-started broker, exits 1.
#   deploy/local-kafka.sh stop      SIGTERM, wait, SIGKILL after KAFKA_STOP_TIMEOUT.
#                                   Exit 0 also when it was not running. Data is kept.
#   deploy/local-kafka.sh restart   stop + start (data kept).
#   deploy/local-kafka.sh status    exit 0 if running and answering, 1 if not.
#   deploy/local-kafka.sh reset     stop and delete the data dir (topics, offsets, logs).
#   deploy/local-kafka.sh logs [-f] last 100 lines of the broker log (-f: follow).
#   deploy/local-kafka.sh fetch     only fetch the jars into the cache.
#   deploy/local-kafka.sh tool NAME [ARGS...]
#                                   run a Kafka CLI against this broker, e.g.
#                                   `tool kafka-topics --list`,
#                                   `tool kafka-consumer-groups --describe --all-groups`,
#                                   `tool kafka-transactions list`.
#                                   (--bootstrap-server is added for you.)
#
# Environment (all optional):
#   KAFKA_PORT              client listener port on 127.0.0.1          (default 9092)
#   KAFKA_CONTROLLER_PORT   KRaft controller listener port             (default KAFKA_PORT+1)
#   KAFKA_DATA_DIR          broker state: storage, config, logs, pid   (default /tmp/streamguard-kafka-$KAFKA_PORT)
#   KAFKA_HEAP              JVM max heap, e.g. 512m or 1g              (default 512m)
#   KAFKA_JVM_OPTS          extra JVM options for the broker
#   KAFKA_START_TIMEOUT     seconds to wait for the broker to answer   (default 90)
#   KAFKA_STOP_TIMEOUT      seconds to wait after SIGTERM before KILL  (default 60)
#   STREAMGUARD_CACHE       jar cache root (outside the repo)          (default $HOME/.cache/streamguard)
#   JAVA_HOME               used for `java` when set; Java 11+ needed (17 tested)
#   MVN_OPTS_EXTRA          extra arguments for the one-time `mvn` fetch (e.g. -o, -s settings.xml)
#
# Several instances can run side by side: give each its own KAFKA_PORT (the data dir,
# controller port, pid file and log all follow from it). Example:
#   KAFKA_PORT=19092 deploy/local-kafka.sh start
#
# Layout:
#   $STREAMGUARD_CACHE/kafka-<ver>/libs/*.jar    broker + tools + logging jars (fetched once;
#                                                `.complete` is written last, so an interrupted
#                                                fetch is redone on the next start)
#   $KAFKA_DATA_DIR/server.properties            generated on every start
#   $KAFKA_DATA_DIR/cluster.id                   random KRaft cluster id (made once)
#   $KAFKA_DATA_DIR/kraft/                       log.dirs + metadata log (survives stop/start)
#   $KAFKA_DATA_DIR/logs/server.log              broker log (log4j); logs/kafka.out: JVM stdout/stderr
#   $KAFKA_DATA_DIR/kafka.pid                    pid of the broker JVM
#   $KAFKA_DATA_DIR.lock                         serializes start/stop/reset of one instance
# (The default data dir is under /tmp: data survives stop/start, not necessarily a reboot.)
#
# Broker settings are tuned for one node: replication factors and min ISR 1 for the
# offsets and transaction-state topics, group.initial.rebalance.delay.ms=0,
# num.partitions=1, auto.create.topics.enable=true, 12 hours / unbounded-size retention.
# Transactions (and KIP-447 send_offsets_to_transaction with group metadata) work.

set -euo pipefail

readonly KAFKA_VERSION="3.9.1"          # pinned; resolved from Maven Central
readonly SCALA_BINARY="2.13"
readonly RELOAD4J_VERSION="1.2.25"      # the log4j 1.x backend Kafka 3.9 ships with
readonly SLF4J_VERSION="1.7.36"         # matches kafka 3.9.1's slf4j-api
readonly DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

die() { echo "local-kafka: error: $*" >&2; exit 1; }
say() { echo "local-kafka: $*" >&2; }

# ---------------------------------------------------------------- settings ----
PORT="${KAFKA_PORT:-9092}"
[[ "$PORT" =~ ^[0-9]{1,5}$ ]] && (( 10#$PORT > 0 && 10#$PORT < 65535 )) \
    || die "KAFKA_PORT must be a port number, got '$PORT'"
PORT=$((10#$PORT))
CPORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
[[ "$CPORT" =~ ^[0-9]{1,5}$ ]] && (( 10#$CPORT > 0 && 10#$CPORT < 65536 )) \
    || die "KAFKA_CONTROLLER_PORT must be a port number, got '$CPORT'"
CPORT=$((10#$CPORT))
(( CPORT != PORT )) || die "KAFKA_CONTROLLER_PORT must differ from KAFKA_PORT ($PORT)"
DATA_DIR="${KAFKA_DATA_DIR:-/tmp/streamguard-kafka-$PORT}"
[[ "$DATA_DIR" == /* ]] || DATA_DIR="$PWD/$DATA_DIR"
DATA_DIR="${DATA_DIR%/}"
[[ -n "$DATA_DIR" ]] || die "KAFKA_DATA_DIR must not be /"
HEAP="${KAFKA_HEAP:-512m}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-60}"
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || die "KAFKA_START_TIMEOUT must be whole seconds"
[[ "$STOP_TIMEOUT" =~ ^[0-9]+$ ]] || die "KAFKA_STOP_TIMEOUT must be whole seconds"
CACHE_ROOT="${STREAMGUARD_CACHE:-${HOME:?HOME is not set}/.cache/streamguard}"
KAFKA_HOME="$CACHE_ROOT/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
COMPLETE_MARKER="$KAFKA_HOME/.complete"

BOOTSTRAP="127.0.0.1:$PORT"
STORAGE_DIR="$DATA_DIR/kraft"
LOG_DIR="$DATA_DIR/logs"
PID_FILE="$DATA_DIR/kafka.pid"
CONFIG="$DATA_DIR/server.properties"
LOG4J_CONFIG="$DATA_DIR/log4j.properties"
TOOLS_LOG4J_CONFIG="$DATA_DIR/tools-log4j.properties"
CLIENT_CONFIG="$DATA_DIR/probe-client.properties"
# Marker on the broker's command line: lets status/stop make sure a pid really is
# *this* broker (pid files outlive reboots and pids get reused).
PROC_MARKER="-Dstreamguard.kafka.datadir=$DATA_DIR"

# --------------------------------------------------------------- prerequisites ----
JAVA=""
need_java() {
    if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
        JAVA="$JAVA_HOME/bin/java"
    elif command -v java >/dev/null 2>&1; then
        JAVA="$(command -v java)"
    else
        die "java not found (install a JDK/JRE 11+, e.g. 'apt-get install openjdk-17-jre-headless', or set JAVA_HOME)"
    fi
    local v
    v="$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[.".].*/\1/p' | head -n1)"
    if [[ "$v" =~ ^[0-9]+$ ]] && (( v < 11 )); then
        die "Kafka $KAFKA_VERSION needs Java 11+, but $JAVA is Java $v"
    fi
}

classpath() { echo "$LIBS/*"; }

# -------------------------------------------------------------- jar fetching ----
write_pom() {
    cat >"$1/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by deploy/local-kafka.sh: runtime jars of a Kafka $KAFKA_VERSION broker -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamguard.local</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- the broker (kafka.Kafka, kafka.tools.StorageTool) and its runtime deps -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_$SCALA_BINARY</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-storage</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- CLI tools (kafka-topics, kafka-consumer-groups, kafka-transactions, ...);
         Kafka Connect's REST stack is not needed for them -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka-tools</artifactId>
      <version>$KAFKA_VERSION</version>
      <exclusions>
        <exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion>
        <exclusion><groupId>com.fasterxml.jackson.jaxrs</groupId><artifactId>jackson-jaxrs-json-provider</artifactId></exclusion>
      </exclusions>
    </dependency>
    <!-- logging backend, as in the Kafka $KAFKA_VERSION distribution -->
    <dependency>
      <groupId>ch.qos.reload4j</groupId>
      <artifactId>reload4j</artifactId>
      <version>$RELOAD4J_VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
}

cache_complete() { [[ -f "$COMPLETE_MARKER" && -f "$LIBS/kafka_$SCALA_BINARY-$KAFKA_VERSION.jar" ]]; }

fetch_jars() {
    cache_complete && return 0
    command -v mvn >/dev/null 2>&1 \
        || die "mvn not found: it is needed once to fetch Kafka $KAFKA_VERSION from Maven Central (e.g. 'apt-get install maven')"
    mkdir -p "$CACHE_ROOT"
    # One fetch at a time per version (parallel starts on different ports share the cache).
    exec 8>"$CACHE_ROOT/kafka-$KAFKA_VERSION.lock"
    flock 8
    if cache_complete; then exec 8>&-; return 0; fi

    say "fetching Kafka $KAFKA_VERSION jars with mvn into $LIBS (one time) ..."
    local started=$SECONDS work
    rm -rf "$KAFKA_HOME"              # whatever is there is an unfinished fetch
    mkdir -p "$KAFKA_HOME"
    work="$(mktemp -d "$KAFKA_HOME/.fetch.XXXXXX")"
    write_pom "$work"
    # shellcheck disable=SC2086  # MVN_OPTS_EXTRA is a list of words on purpose
    if ! mvn -B -q -f "$work/pom.xml" ${MVN_OPTS_EXTRA:-} \
            "$DEP_PLUGIN:copy-dependencies" \
            -DincludeScope=runtime \
            -DoutputDirectory="$work/libs" >"$work/mvn.log" 2>&1; then
        tail -n 40 "$work/mvn.log" >&2 || true
        rm -rf "$KAFKA_HOME"
        die "mvn could not fetch Kafka $KAFKA_VERSION (see output above)"
    fi
    ls "$work/libs"/kafka_"$SCALA_BINARY"-"$KAFKA_VERSION".jar >/dev/null 2>&1 \
        || { rm -rf "$KAFKA_HOME"; die "fetch finished but kafka_$SCALA_BINARY-$KAFKA_VERSION.jar is missing"; }
    mv "$work/libs" "$LIBS"
    mv "$work/pom.xml" "$KAFKA_HOME/pom.xml"
    rm -rf "$work"
    ls "$LIBS" >"$KAFKA_HOME/jars.txt"
    echo "kafka $KAFKA_VERSION fetched $(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$COMPLETE_MARKER"   # last
    say "fetched $(wc -l <"$KAFKA_HOME/jars.txt") jars in $((SECONDS - started)) s"
    exec 8>&-
}

# ------------------------------------------------------------- process state ----
# pid of our broker if it is alive, else nothing (and a stale pid file is removed).
broker_pid() {
    [[ -f "$PID_FILE" ]] || return 0
    local pid
    pid="$(tr -dc '0-9' <"$PID_FILE" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
            && tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$PROC_MARKER"; then
        echo "$pid"
    else
        rm -f "$PID_FILE"
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_tool_configs() {
    mkdir -p "$DATA_DIR"
    cat >"$TOOLS_LOG4J_CONFIG" <<'EOF'
log4j.rootLogger=ERROR, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
    cat >"$CLIENT_CONFIG" <<'EOF'
request.timeout.ms=5000
default.api.timeout.ms=8000
retries=1
EOF
}

# Kafka CLI tools by their usual script name.
tool_class() {
    case "$1" in
        kafka-topics)                echo org.apache.kafka.tools.TopicCommand ;;
        kafka-consumer-groups)       echo org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
        kafka-transactions)          echo org.apache.kafka.tools.TransactionsCommand ;;
        kafka-console-consumer)      echo org.apache.kafka.tools.consumer.ConsoleConsumer ;;
        kafka-console-producer)      echo kafka.tools.ConsoleProducer ;;
        kafka-get-offsets)           echo org.apache.kafka.tools.GetOffsetShell ;;
        kafka-configs)               echo kafka.admin.ConfigCommand ;;
        kafka-broker-api-versions)   echo kafka.admin.BrokerApiVersionsCommand ;;
        kafka-metadata-quorum)       echo org.apache.kafka.tools.MetadataQuorumCommand ;;
        kafka-storage)               echo kafka.tools.StorageTool ;;
        *.*)                         echo "$1" ;;   # a fully qualified class name
        *) die "unknown tool '$1' (try kafka-topics, kafka-consumer-groups, kafka-transactions, kafka-console-consumer, kafka-get-offsets, kafka-configs, or a class name)" ;;
    esac
}

run_tool() {   # run_tool CLASS ARGS...  (JVM for CLI tools: small heap, quiet logging)
    local cls="$1"; shift
    "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$TOOLS_LOG4J_CONFIG" \
        -cp "$(classpath)" "$cls" "$@"
}

# Does the broker really answer? (metadata round trip through Kafka's own admin client)
answers() {
    port_open "$PORT" || return 1
    cache_complete || return 1
    [[ -f "$CLIENT_CONFIG" && -f "$TOOLS_LOG4J_CONFIG" ]] || write_tool_configs
    timeout 30 "$JAVA" -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$TOOLS_LOG4J_CONFIG" \
        -cp "$(classpath)" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$BOOTSTRAP" --command-config "$CLIENT_CONFIG" --list \
        >/dev/null 2>&1
}

START_MARK="=== deploy/local-kafka.sh: broker start"

show_log_tail() {   # the last lines each log got since the latest start
    local f
    for f in "$LOG_DIR/server.log" "$LOG_DIR/kafka.out"; do
        if [[ -s "$f" ]]; then
            echo "----- last lines of $f -----" >&2
            awk -v m="$START_MARK" 'index($0, m) == 1 { n = 0 } { buf[n++] = $0 }
                END { for (i = (n > 40 ? n - 40 : 0); i < n; i++) print buf[i] }' "$f" >&2
        fi
    done
}

# ------------------------------------------------------------------ config ----
write_broker_config() {
    mkdir -p "$DATA_DIR" "$STORAGE_DIR" "$LOG_DIR"
    cat >"$CONFIG" <<EOF
# generated by deploy/local-kafka.sh on every start; edit the script, not this file
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$STORAGE_DIR
metadata.log.dir=$STORAGE_DIR

# one node: nothing can be replicated
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true

# retention: half a day, no size bound (tests and benchmarks read back what they wrote
# within minutes; a week of benchmark topics once filled an 18 GB disk); small segments
# so tests' data stays small on disk
log.retention.hours=12
log.retention.bytes=-1
log.segment.bytes=67108864
log.retention.check.interval.ms=300000

num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOF
    cat >"$LOG4J_CONFIG" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$LOG_DIR/server.log
log4j.appender.file.MaxFileSize=50MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel\$=WARN
log4j.logger.org.apache.kafka.clients.NetworkClient=WARN
EOF
}

format_storage() {
    if [[ -f "$STORAGE_DIR/meta.properties" ]]; then
        return 0
    fi
    local cid
    if [[ -s "$DATA_DIR/cluster.id" ]]; then
        cid="$(<"$DATA_DIR/cluster.id")"
    else
        cid="$(run_tool kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 | tr -d '[:space:]')"
        [[ "$cid" =~ ^[A-Za-z0-9_-]{22}$ ]] || die "could not generate a KRaft cluster id (got '$cid')"
        echo "$cid" >"$DATA_DIR/cluster.id"
    fi
    say "formatting KRaft storage in $STORAGE_DIR (cluster id $cid)"
    run_tool kafka.tools.StorageTool format --ignore-formatted -t "$cid" -c "$CONFIG" \
        >"$LOG_DIR/format.log" 2>&1 \
        || { cat "$LOG_DIR/format.log" >&2; die "formatting KRaft storage failed"; }
}

# ---------------------------------------------------------------- commands ----
lock_instance() {   # serialize start/stop/reset of one instance (e.g. parallel test workers)
    mkdir -p "$(dirname "$DATA_DIR")"
    exec 9>"$DATA_DIR.lock"
    flock 9
}

wait_until_answering() {   # wait_until_answering PID
    local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
    while (( SECONDS < deadline )); do
        if ! kill -0 "$pid" 2>/dev/null; then
            show_log_tail
            rm -f "$PID_FILE"
            die "the broker process exited during startup (logs above; full log in $LOG_DIR)"
        fi
        if answers; then return 0; fi
        sleep 0.25   # cheap: answers() only starts a JVM once the client port is open
    done
    show_log_tail
    say "the broker (pid $pid) did not answer on $BOOTSTRAP within ${START_TIMEOUT}s; stopping it"
    stop_pid "$pid"
    die "broker start timed out after ${START_TIMEOUT}s (KAFKA_START_TIMEOUT); log tail above, full log in $LOG_DIR"
}

cmd_start() {
    need_java
    fetch_jars
    lock_instance
    write_tool_configs
    local pid started=$SECONDS
    pid="$(broker_pid)"
    if [[ -n "$pid" ]]; then
        if answers; then
            say "already running (pid $pid), answering on $BOOTSTRAP"
            echo "bootstrap=$BOOTSTRAP"
            return 0
        fi
        say "running (pid $pid) but not answering yet; waiting up to ${START_TIMEOUT}s"
        wait_until_answering "$pid"
        echo "bootstrap=$BOOTSTRAP"
        return 0
    fi

    local p
    for p in "$PORT" "$CPORT"; do
        port_open "$p" && die "port $p on 127.0.0.1 is already in use by another process (choose another KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
    done

    write_broker_config
    format_storage

    local mark
    mark="$START_MARK $(date '+%Y-%m-%d %H:%M:%S') (Kafka $KAFKA_VERSION, port $PORT) ==="
    echo "$mark" >>"$LOG_DIR/server.log"
    echo "$mark" >>"$LOG_DIR/kafka.out"
    # Own session (setsid): detached from this shell and its terminal, so it outlives
    # the script and a Ctrl-C of the caller. No fd of ours is inherited (stdio go to
    # kafka.out, lock fds 8/9 are closed), so callers capturing our output don't hang.
    # Working dir = data dir, so a JVM crash file (hs_err_pid*.log) lands there.
    # `exec`s all the way down, so $! is the JVM's pid.
    # shellcheck disable=SC2086  # KAFKA_JVM_OPTS is a list of words on purpose
    (cd "$DATA_DIR" && exec setsid "$JAVA" -Xms"$HEAP" -Xmx"$HEAP" \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$LOG4J_CONFIG" -Dkafka.logs.dir="$LOG_DIR" \
        ${KAFKA_JVM_OPTS:-} \
        "$PROC_MARKER" \
        -cp "$(classpath)" kafka.Kafka "$CONFIG") \
        </dev/null >>"$LOG_DIR/kafka.out" 2>&1 8>&- 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    say "started broker pid $pid (Kafka $KAFKA_VERSION, data $DATA_DIR); waiting for it to answer on $BOOTSTRAP ..."
    wait_until_answering "$pid"
    say "up after $((SECONDS - started)) s"
    echo "bootstrap=$BOOTSTRAP"
}

stop_pid() {   # stop_pid PID: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL
    local pid="$1" deadline=$((SECONDS + STOP_TIMEOUT))
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "broker pid $pid still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    fi
    rm -f "$PID_FILE"
}

cmd_stop() {
    lock_instance
    local pid
    pid="$(broker_pid)"
    if [[ -z "$pid" ]]; then
        say "not running (port $PORT)"
        return 0
    fi
    say "stopping broker pid $pid (SIGTERM, up to ${STOP_TIMEOUT}s) ..."
    stop_pid "$pid"
    say "stopped"
}

cmd_status() {
    local pid
    pid="$(broker_pid)"
    if [[ -z "$pid" ]]; then
        echo "down (port $PORT, data $DATA_DIR)"
        return 1
    fi
    need_java
    if answers; then
        echo "up (pid $pid) bootstrap=$BOOTSTRAP data=$DATA_DIR"
        return 0
    fi
    echo "starting or unhealthy (pid $pid, not answering on $BOOTSTRAP); see: $0 logs"
    return 1
}

cmd_reset() {
    cmd_stop
    # stop already holds the instance lock
    if [[ -d "$DATA_DIR" ]]; then
        case "$(cd "$DATA_DIR" && pwd -P)" in
            /|"$HOME"|/tmp|/root|/home) die "refusing to delete '$DATA_DIR'" ;;
        esac
        rm -rf "$DATA_DIR"
        say "deleted $DATA_DIR"
    fi
}

cmd_logs() {
    [[ -f "$LOG_DIR/server.log" ]] || die "no broker log yet at $LOG_DIR/server.log"
    if [[ "${1:-}" == "-f" ]]; then
        exec tail -n 100 -F "$LOG_DIR/server.log"
    fi
    tail -n 100 "$LOG_DIR/server.log"
}

cmd_tool() {
    (( $# >= 1 )) || die "usage: $0 tool NAME [ARGS...]"
    need_java
    fetch_jars
    write_tool_configs
    local cls
    cls="$(tool_class "$1")"; shift
    case "$cls" in
        kafka.tools.StorageTool) run_tool "$cls" "$@" ;;
        *) run_tool "$cls" --bootstrap-server "$BOOTSTRAP" "$@" ;;
    esac
}

usage() {
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

case "${1:-}" in
    start)   cmd_start ;;
    stop)    cmd_stop ;;
    restart) cmd_stop; exec 9>&-; cmd_start ;;
    status)  cmd_status ;;
    reset)   cmd_reset ;;
    logs)    shift; cmd_logs "$@" ;;
    fetch)   need_java; fetch_jars; echo "libs=$LIBS" ;;
    tool)    shift; cmd_tool "$@" ;;
    -h|--help|help) usage ;;
    *) usage ;;
esac
