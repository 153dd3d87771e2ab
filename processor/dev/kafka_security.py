"""Secured listeners for the development broker, as managed clusters have them.

SSL with client certificates required (mutual TLS; the principal is the certificate's CN), SASL_SSL and
SASL_PLAINTEXT with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN users, and ACLs enforced by KRaft's StandardAuthorizer.
SCRAM users are written into the metadata log when the storage is formatted (`--add-scram`); ACLs are created
through Kafka's own Admin API by a one-file Java program (the broker's jars carry no ACL command line tool).
The PLAINTEXT and CONTROLLER listeners stay, bound to 127.0.0.1, with the anonymous principal as a super user:
that is how the broker talks to its own controller and how `grant` sets things up.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from processor.dev.certs import CertificateAuthority
from processor.eventlog.kafka.acls import Permission

SECURE_LISTENERS = ("SSL", "SASL_SSL", "SASL_PLAINTEXT")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
#: the super user of the SASL listeners (the platform team's administrator)
ADMIN_USER = "admin"

_ACL_TOOL = """
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.acl.*;
import org.apache.kafka.common.resource.*;

/** AclGrant BOOTSTRAP USER:RESOURCE_TYPE:PATTERN_TYPE:OPERATION:NAME ... : allow each, from any host. */
public class AclGrant {
    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        config.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        List<AclBinding> bindings = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            String[] f = args[i].split(":", 5);
            bindings.add(new AclBinding(
                new ResourcePattern(ResourceType.valueOf(f[1]), f[4], PatternType.valueOf(f[2])),
                new AccessControlEntry("User:" + f[0], "*", AclOperation.valueOf(f[3]), AclPermissionType.ALLOW)));
        }
        try (Admin admin = Admin.create(config)) {
            admin.createAcls(bindings).all().get();
        }
    }
}
"""


@dataclass(frozen=True, slots=True)
class Acl:
    """Allow `user` one operation on a resource (topic, group, cluster, transactional id), by name or prefix."""

    user: str
    resource_type: str  # TOPIC | GROUP | CLUSTER | TRANSACTIONAL_ID
    name: str
    operation: str  # READ | WRITE | CREATE | DESCRIBE | DESCRIBE_CONFIGS | ...
    pattern: str = "LITERAL"  # or PREFIXED

    def argument(self) -> str:
        return f"{self.user}:{self.resource_type}:{self.pattern}:{self.operation}:{self.name}"

    @classmethod
    def allowing(cls, user: str, permissions: Iterable[Permission]) -> list[Acl]:
        """Kafka ACLs for `user` from permissions in Strimzi's spelling (topic/Read -> TOPIC/READ)."""
        return [
            cls(user, _snake(permission.resource_type), permission.name, _snake(op))
            for permission in permissions for op in permission.operations
        ]


def _snake(name: str) -> str:
    """Strimzi's spelling to Kafka's enum names: transactionalId -> TRANSACTIONAL_ID, DescribeConfigs -> ..."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """The users, passwords and certificate files of one secured development broker directory."""

    directory: Path
    passwords: Mapping[str, str]

    @classmethod
    def load_or_create(cls, workdir: Path, users: Iterable[str] = ("processor",)) -> BrokerSecurity:
        """The directory's users and certificates; made the first time (a CA, a server certificate for
        127.0.0.1/localhost, a client certificate per user with the user's name as CN, random passwords)."""
        directory = workdir.resolve() / "security"
        users_file = directory / "users.json"
        if users_file.exists():
            return cls(directory, json.loads(users_file.read_text()))
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca = CertificateAuthority("processor dev kafka CA")
        ca.write(directory)
        server = ca.issue("localhost")
        keystore = directory / "broker.pem"  # Kafka's PEM key store: the key, then the certificate
        fd = os.open(keystore, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(server.key_pem + server.cert_pem)
        passwords = {name: secrets.token_urlsafe(18) for name in (ADMIN_USER, *users)}
        for name in passwords:
            ca.issue(name, client=True).write(directory, name)
        fd = os.open(users_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(passwords, out)
        return cls(directory, passwords)

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def client_files(self, user: str) -> tuple[Path, Path]:
        """Certificate and key of `user` for the SSL listener (mutual TLS)."""
        return self.directory / f"{user}.crt", self.directory / f"{user}.key"

    def server_properties(self) -> dict[str, str]:
        scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        plain_users = " ".join(f'user_{name}="{password}"' for name, password in self.passwords.items())
        plain_jaas = f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
        props = {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.directory / "broker.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "listener.name.ssl.ssl.client.auth": "required",
            # the SSL principal is the certificate's CN, so ACLs name users the same way on every listener
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
            "sasl.enabled.mechanisms": ",".join((*SCRAM_MECHANISMS, "PLAIN")),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:ANONYMOUS;User:{ADMIN_USER}",
        }
        for listener in ("sasl_ssl", "sasl_plaintext"):
            for mechanism in SCRAM_MECHANISMS:
                props[f"listener.name.{listener}.{mechanism.lower()}.sasl.jaas.config"] = scram_jaas
            props[f"listener.name.{listener}.plain.sasl.jaas.config"] = plain_jaas
        return props

    def format_arguments(self) -> list[str]:
        """`--add-scram` arguments of the storage tool: every user, both SCRAM mechanisms."""
        return [
            argument
            for name, password in self.passwords.items()
            for mechanism in SCRAM_MECHANISMS
            for argument in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]

    def grant(self, java: Sequence[str], bootstrap: str, acls: Sequence[Acl]) -> subprocess.CompletedProcess[str]:
        """Run the ACL tool (`java` is the JVM command with the broker's class path); return its result."""
        tool = self.directory / "AclGrant.java"
        if not tool.exists():
            tool.write_text(_ACL_TOOL)
        command = [*java, str(tool), bootstrap, *(acl.argument() for acl in acls)]
        return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)  # noqa: S603
