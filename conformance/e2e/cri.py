#!/usr/bin/python3
"""A small CRI client: what the kubelet says to containerd, one call at a time, JSON in and out.

    cri.py call METHOD [JSON]      any RuntimeService or ImageService method of cri/api.proto;
                                   the request as JSON (proto field names), the response printed
                                   as JSON (proto field names, defaults included)
    cri.py exec CONTAINER CMD...   ExecSync: prints the command's stdout, exits with its status

    CRI_ENDPOINT   containerd's socket (unix path)
    CRI_GEN_DIR    where protoc's Python output is written (default: a directory next to the socket)
    CRI_TIMEOUT    seconds for each call (default 60)

Needs grpcio and protobuf (Debian: python3-grpcio, python3-protobuf) and protoc
(protobuf-compiler); the stubs are generated from cri/api.proto at the first call.
"""
import importlib
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def load_api():
    endpoint = os.environ["CRI_ENDPOINT"]
    gen = os.environ.get("CRI_GEN_DIR") or os.path.join(os.path.dirname(endpoint), "cri-py")
    proto_dir = os.path.join(HERE, "cri")
    if not os.path.exists(os.path.join(gen, "api_pb2.py")):
        os.makedirs(gen, exist_ok=True)
        subprocess.run(["protoc", "-I", proto_dir, "--python_out", gen, os.path.join(proto_dir, "api.proto")], check=True)
    sys.path.insert(0, gen)
    return importlib.import_module("api_pb2"), endpoint


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("call", "exec"):
        sys.exit(__doc__)
    import grpc
    from google.protobuf import json_format, symbol_database

    api, endpoint = load_api()
    channel = grpc.insecure_channel("unix://" + endpoint)
    timeout = float(os.environ.get("CRI_TIMEOUT", "60"))
    db = symbol_database.Default()

    def call(name, request):
        for service in api.DESCRIPTOR.services_by_name.values():
            method = service.methods_by_name.get(name)
            if method is None:
                continue
            req_cls = db.GetSymbol(method.input_type.full_name)
            resp_cls = db.GetSymbol(method.output_type.full_name)
            stub = channel.unary_unary(f"/{service.full_name}/{method.name}",
                                       request_serializer=req_cls.SerializeToString,
                                       response_deserializer=resp_cls.FromString)
            return stub(json_format.ParseDict(request, req_cls()), timeout=timeout)
        sys.exit(f"cri.py: no method {name} in cri/api.proto")

    try:
        if sys.argv[1] == "call":
            request = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
            response = call(sys.argv[2], request)
            print(json_format.MessageToJson(response, preserving_proto_field_name=True,
                                            including_default_value_fields=True))
        else:
            response = call("ExecSync", {"container_id": sys.argv[2], "cmd": sys.argv[3:], "timeout": int(timeout)})
            sys.stdout.write(response.stdout.decode(errors="replace"))
            sys.stderr.write(response.stderr.decode(errors="replace"))
            sys.exit(response.exit_code)
    except grpc.RpcError as e:
        print(f"cri.py: {sys.argv[2]}: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
