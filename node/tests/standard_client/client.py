#!/usr/bin/env python3
"""A standard gRPC client (Python grpcio) calling a node's peer API.

It does what any gRPC client written from the node's .proto files does: the stubs are
generated from proto/ (and the health-checking protocol in health.proto next to this
file) with grpc_tools.protoc into a temporary directory, and the channel uses
grpc.ssl_channel_credentials with the data-space CA, with a client certificate when
one is given. The server is verified by the host name or IP address in TARGET (or the
name given with --authority), as grpcio does by default: no ssl_target_name_override.

It calls grpc.health.v1.Health/Check and liutong.v1.Node/Describe and prints one JSON
object on standard output:

    {"target": "...",
     "health": {"status": "SERVING"} | {"error": {"code": "...", "details": "..."}},
     "describe": {<DescribeResponse as JSON>} | {"error": {...}}}

Exit status: 0 when both calls were made (whatever they answered), 2 for bad
arguments, 3 when grpcio or grpc_tools is missing, 4 when the stubs cannot be
generated.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# node/tests/standard_client/ -> the repository root.
PROTO_ROOT = HERE.parents[2] / "proto"
# A deadline for each call, so an unanswered call ends the client instead of hanging.
CALL_TIMEOUT_SECONDS = 30

MISSING = (
    "the standard gRPC client needs Python's grpcio and grpc_tools for {python}: "
    "install the Debian packages python3-grpcio and python3-grpc-tools "
    "(apt-get install python3-grpcio python3-grpc-tools), or "
    "`{python} -m pip install grpcio grpcio-tools` ({error})"
)


def main():
    args = parse_args()
    try:
        import grpc  # noqa: F401
        import grpc_tools.protoc  # noqa: F401
    except ImportError as e:
        print(MISSING.format(python=sys.executable, error=e), file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory(prefix="liutong-stubs-") as stubs:
        if not generate_stubs(Path(stubs)):
            return 4
        sys.path.insert(0, stubs)
        result = call(args)
    print(json.dumps(result))
    return 0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="HOST:PORT of the node's peer API")
    p.add_argument("--ca", required=True, type=Path, help="the data-space CA (PEM)")
    p.add_argument("--cert", type=Path, help="client certificate chain (PEM)")
    p.add_argument("--key", type=Path, help="the client certificate's private key (PEM)")
    p.add_argument(
        "--authority",
        help="ask for the server by this name (the :authority, and the name its "
        "certificate must carry) instead of the host in --target",
    )
    args = p.parse_args()
    if (args.cert is None) != (args.key is None):
        p.error("give --cert and --key together, or neither")
    return args


def generate_stubs(out):
    """Generates the Python stubs of node.proto (and what it imports) and health.proto."""
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={HERE}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO_ROOT / "liutong/v1/envelope.proto"),
        str(PROTO_ROOT / "liutong/v1/node.proto"),
        str(HERE / "health.proto"),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(
            f"generating the stubs failed ({' '.join(command)}):\n{done.stderr}",
            file=sys.stderr,
        )
        return False
    return True


def call(args):
    import grpc
    from google.protobuf import json_format

    import health_pb2
    import health_pb2_grpc
    from liutong.v1 import node_pb2, node_pb2_grpc

    credentials = grpc.ssl_channel_credentials(
        root_certificates=args.ca.read_bytes(),
        private_key=args.key.read_bytes() if args.key else None,
        certificate_chain=args.cert.read_bytes() if args.cert else None,
    )
    # A proxy named in the environment (http_proxy, grpc_proxy) must not carry the call:
    # the node is asked directly at TARGET.
    options = [("grpc.enable_http_proxy", 0)]
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    result = {"target": args.target}
    with grpc.secure_channel(args.target, credentials, options=options) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_SECONDS
            )
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            result["health"] = {"status": status}
        except grpc.RpcError as e:
            result["health"] = {"error": rpc_error(e)}
        try:
            answer = node_pb2_grpc.NodeStub(channel).Describe(
                node_pb2.DescribeRequest(), timeout=CALL_TIMEOUT_SECONDS
            )
            result["describe"] = json_format.MessageToDict(
                answer, preserving_proto_field_name=True
            )
        except grpc.RpcError as e:
            result["describe"] = {"error": rpc_error(e)}
    return result


def rpc_error(e):
    return {"code": e.code().name, "details": e.details()}


if __name__ == "__main__":
    sys.exit(main())
