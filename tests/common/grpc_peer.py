#!/usr/bin/python3
"""gRPC origin and clients for tests/grpc.rs (Debian's python3-grpcio; run with /usr/bin/python3).

Messages are raw bytes (JSON where a call needs structure), with generic handlers and identity
(de)serializers, so no .proto file or protoc is needed.

  grpc_peer.py server PORT VERSION
      Serves test.Echo (Unary, ServerStream, ClientStream, Bidi, Fail, Sleep) and
      grpc.health.v1.Health/Check (SERVING) over h2c on 127.0.0.1:PORT; prints "ready".
  grpc_peer.py client TARGET [--ca FILE --authority NAME] CASE [ARGS...]
      Runs one case against TARGET (host:port) and prints one JSON object.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "test.Echo"


def ident(b):
    return b


def server(port, version):
    def unary(request, context):
        seen = dict(context.invocation_metadata())
        context.set_trailing_metadata((("x-origin-version", version),))
        return json.dumps({
            "version": version,
            "echo": request.decode(),
            "x-request-id": seen.get("x-request-id"),
            "x-user": seen.get("x-user"),
            "x-forwarded-for": seen.get("x-forwarded-for"),
        }).encode()

    def server_stream(request, context):
        ask = json.loads(request)
        payload = b"x" * ask.get("size", 16)
        for _ in range(ask["n"]):
            yield payload

    def client_stream(requests, context):
        count = 0
        total = 0
        for message in requests:
            count += 1
            total += len(message)
        return json.dumps({"count": count, "bytes": total, "version": version}).encode()

    def bidi(requests, context):
        for message in requests:
            yield version.encode() + b":" + message

    def fail(request, context):
        ask = json.loads(request)
        context.set_trailing_metadata((("x-detail", ask.get("detail", "")),))
        context.abort(grpc.StatusCode[ask["code"]], ask.get("message", ""))

    def sleep(request, context):
        # Sleeps whatever the deadline says, so only the gateway or the client can end it.
        time.sleep(float(request))
        return b"slept"

    def health(request, context):
        return b"\x08\x01"

    rpc = grpc.unary_unary_rpc_method_handler
    handlers = {
        "Unary": rpc(unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, ident, ident),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, ident, ident),
        "Fail": rpc(fail, ident, ident),
        "Sleep": rpc(sleep, ident, ident),
    }
    srv = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),
        options=[("grpc.max_concurrent_streams", 1000)],
    )
    srv.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(SERVICE, handlers),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": rpc(health, ident, ident)}),
    ))
    srv.add_insecure_port("127.0.0.1:%d" % port)
    srv.start()
    print("ready", flush=True)
    srv.wait_for_termination()


def channel(target, ca, authority):
    # No proxy from the environment, and one connection per channel.
    options = [("grpc.enable_http_proxy", 0)]
    if authority:
        options.append(("grpc.ssl_target_name_override", authority))
        options.append(("grpc.default_authority", authority))
    if ca:
        with open(ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        return grpc.secure_channel(target, creds, options=options)
    return grpc.insecure_channel(target, options=options)


def method(ch, name, kind="unary_unary"):
    return getattr(ch, kind)("/%s/%s" % (SERVICE, name), request_serializer=ident,
                             response_deserializer=ident)


def status_of(err):
    return {
        "code": err.code().name,
        "details": err.details(),
        "trailers": {k: v for k, v in (err.trailing_metadata() or ())},
        "headers": {k: v for k, v in (err.initial_metadata() or ())},
    }


def client(target, ca, authority, case, args):
    ch = channel(target, ca, authority)
    out = {}
    if case == "unary":
        metadata = tuple(tuple(a.split("=", 1)) for a in args)
        response, call = method(ch, "Unary").with_call(b"hello", metadata=metadata, timeout=20)
        out = json.loads(response)
        out["trailers"] = {k: v for k, v in call.trailing_metadata()}
        out["headers"] = {k: v for k, v in call.initial_metadata()}
        out["code"] = call.code().name
    elif case == "canary":
        # Each user calls `rounds` times on its own metadata, over one channel: the routing
        # cookie, or (a third argument) the user id alone under that metadata key.
        users, rounds = int(args[0]), int(args[1])
        key = args[2] if len(args) > 2 else None
        unary = method(ch, "Unary")
        seen = {}
        for i in range(users):
            user = "user-%d" % i
            metadata = ((key, user),) if key else (("cookie", "canary_user=" + user),)
            for _ in range(rounds):
                response = unary(b"", metadata=metadata, timeout=20)
                seen.setdefault(user, []).append(json.loads(response)["version"])
        out = {"seen": seen}
    elif case == "server_stream":
        n, size = int(args[0]), int(args[1])
        count = 0
        total = 0
        call = method(ch, "ServerStream", "unary_stream")(json.dumps({"n": n, "size": size}).encode(), timeout=60)
        for message in call:
            count += 1
            total += len(message)
        out = {"count": count, "bytes": total, "code": call.code().name}
    elif case == "client_stream":
        n = int(args[0])
        response = method(ch, "ClientStream", "stream_unary")((b"m%d" % i for i in range(n)), timeout=60)
        out = json.loads(response)
    elif case == "bidi":
        n = int(args[0])
        replies = list(method(ch, "Bidi", "stream_stream")((b"%d" % i for i in range(n)), timeout=60))
        out = {"count": len(replies), "first": replies[0].decode(), "last": replies[-1].decode()}
    elif case == "fail":
        try:
            method(ch, "Fail")(json.dumps({"code": args[0], "message": args[1], "detail": args[2]}).encode(), timeout=20)
            out = {"code": "OK"}
        except grpc.RpcError as err:
            out = status_of(err)
    elif case == "call":
        # Any method on any path: for the gateway's own errors (no route, denied, ...).
        path = args[0]
        metadata = tuple(tuple(a.split("=", 1)) for a in args[1:])
        call = ch.unary_unary(path, request_serializer=ident, response_deserializer=ident)
        try:
            _, c = call.with_call(b"x", metadata=metadata, timeout=20)
            out = {"code": c.code().name}
        except grpc.RpcError as err:
            out = status_of(err)
    elif case == "sleep":
        seconds, deadline = args[0], float(args[1])
        started = time.monotonic()
        try:
            method(ch, "Sleep")(seconds.encode(), timeout=deadline)
            out = {"code": "OK"}
        except grpc.RpcError as err:
            out = status_of(err)
        out["elapsed"] = time.monotonic() - started
    elif case == "concurrent":
        n = int(args[0])
        unary = method(ch, "Unary")
        calls = [unary.future(b"c", timeout=60) for _ in range(n)]
        ok = 0
        for c in calls:
            try:
                c.result()
                ok += 1
            except grpc.RpcError:
                pass
        out = {"ok": ok}
    elif case == "stalled_reader":
        # Starts a large server stream, takes one message, then stops reading: prints
        # "stalled" and holds the call open until stdin closes.
        call = method(ch, "ServerStream", "unary_stream")(json.dumps({"n": 100000, "size": 65536}).encode(), timeout=300)
        next(call)
        print(json.dumps({"stalled": True}), flush=True)
        sys.stdin.read()
        call.cancel()
        return
    else:
        raise SystemExit("unknown case " + case)
    print(json.dumps(out), flush=True)


def main():
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), sys.argv[3])
        return
    args = sys.argv[2:]
    target = args.pop(0)
    ca = authority = None
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag == "--ca":
            ca = args.pop(0)
        elif flag == "--authority":
            authority = args.pop(0)
    case = args.pop(0)
    client(target, ca, authority, case, args)


if __name__ == "__main__":
    main()
