"""The host's FunctionRpc protobuf messages, as Python modules, for driving the language worker in tests.

``azure_functions_runtime`` (the Python 3.13+ language worker) does not import protos of its own:
the process that talks gRPC to the host hands it the compiled ``FunctionRpc`` messages
(``request.properties["protos"]``). tests/functions_worker plays that part, so it needs the
same modules.

No package on the registries this project uses ships ``FunctionRpc.proto`` itself, so the
compiled modules come from Microsoft's own package: ``azure-functions-runtime-v1`` 1.2.0 (the
3.10-3.12 twin of ``azure-functions-runtime``, same repository and release train) carries
``FunctionRpc_pb2.py``, ``shared/NullableTypes_pb2.py`` and ``identity/ClaimsIdentityRpc_pb2.py``,
compiled by protoc from Azure/azure-functions-language-worker-protobuf (MIT licence, as is the
package), under ``tests/protos``. That wheel is never installed (it ships a top-level ``tests``
package): it is downloaded with pip, checked against the sha256 below, and only those modules are
extracted, renamed to the package ``azjobs_functionrpc``, into a directory of the test venv.
Nothing of it is committed. The ``*_grpc.py`` stubs are left out: no gRPC channel is involved.

Checked once by hand (not in the suite, which cannot carry the .proto files): their descriptors are
identical, field for field (protoc drops ``json_name`` from generated code), to the three .proto files
of azure-functions-python-worker (its subtree of the protobuf repository) compiled with grpcio-tools
1.70 and protobuf 5.29, the runtime's own development pins. The host's newer copy (v1.10.0-protofile)
adds only ``FunctionEnvironmentReloadResponse.capabilities_update_strategy``, a message these tests
do not use (placeholder specialization).

    python devtools/functionrpc_protos.py DIR     # idempotent; prints DIR
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "azure-functions-runtime-v1"
VERSION = "1.2.0"
WHEEL = "azure_functions_runtime_v1-1.2.0-py3-none-any.whl"
SHA256 = "6ae0abb681e28c61a404b52e1c4481f203bb113e5027fbe908989ea9585a02a0"
SOURCE_PREFIX = "tests/protos/"
MODULE = "azjobs_functionrpc"
#: The compiled modules taken from the wheel (paths under tests/protos/).
MODULES = ("FunctionRpc_pb2.py", "shared/NullableTypes_pb2.py", "identity/ClaimsIdentityRpc_pb2.py")
STAMP = "PROVENANCE.txt"


def _provenance() -> str:
    return (f"Extracted from the PyPI wheel {WHEEL} ({PACKAGE} {VERSION}, sha256 {SHA256}), {SOURCE_PREFIX}.\n"
            "Compiled from Azure/azure-functions-language-worker-protobuf (FunctionRpc.proto, "
            "shared/NullableTypes.proto, identity/ClaimsIdentityRpc.proto); MIT licence, "
            "Copyright (c) Microsoft Corporation. Not redistributed: test use only.\n")


def ensure(target: Path) -> Path:
    """Make ``target/azjobs_functionrpc`` hold the compiled protos (download once); returns ``target``."""
    package = target / MODULE
    if (package / STAMP).is_file() and (package / STAMP).read_text(encoding="utf-8") == _provenance():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                   "--only-binary=:all:", "--dest", tmp, f"{PACKAGE}=={VERSION}"]
        done = subprocess.run(command, capture_output=True, text=True)
        wheel = Path(tmp) / WHEEL
        if done.returncode != 0 or not wheel.is_file():
            raise SystemExit(f"functionrpc_protos: could not download {PACKAGE}=={VERSION}: "
                             f"{(done.stderr or done.stdout).strip()[-2000:]}")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != SHA256:
            raise SystemExit(f"functionrpc_protos: {WHEEL} has sha256 {digest}, expected {SHA256}")
        staging = Path(tmp) / MODULE
        with zipfile.ZipFile(wheel) as archive:
            for relative in MODULES:
                data = archive.read(SOURCE_PREFIX + relative)
                out = staging / relative
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
        for directory in (staging, staging / "shared", staging / "identity"):
            (directory / "__init__.py").write_text("", encoding="utf-8")
        (staging / STAMP).write_text(_provenance(), encoding="utf-8")
        target.mkdir(parents=True, exist_ok=True)
        if package.exists():
            shutil.rmtree(package)
        shutil.move(str(staging), str(package))
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: functionrpc_protos.py DIR")
    print(ensure(Path(sys.argv[1])))
