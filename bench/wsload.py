"""An exact WebSocket-tunnel load for the soak, beside loadgen.py's HTTP/1.1 one and
counting the same way.

Each of `conns` threads opens tunnels one after another: an HTTP/1.1 `GET .../ws?rid=N`
with `Upgrade: websocket` (RFC 6455 §4.1), which `portcullis demo-app` answers with 101
and then echoes every byte. Through a tunnel the thread sends a message every 0.1-0.5 s
(16 B, 1,000 B or 16 KiB of seeded random bytes) and reads the echo back whole, for a
life of 2-20 s; then it closes the tunnel itself (FIN) and opens the next. The
gateway writes a tunnel's access-log record when the tunnel ends (docs/access-log.md
§2.1), so every tunnel, cut or not, must have one.

Before the 101, a tunnel fails as a request does (loadgen.py's kinds: `status-NNN`,
`eof-before-response`, `reset`, `truncated`, `timeout`, `connect-*`), and counts in
`failures`: its record must say why. After the 101 the record says 101 whatever
happens, so what goes wrong there is counted apart, in `cuts`, with its time:

  cut            the tunnel ended (EOF or reset) before the client closed it
  echo-timeout   an echo did not come back whole within `timeout` (15 s)
  echo-mismatch  the bytes that came back are not the bytes sent

The soak expects cuts only at backend faults (a killed, frozen, junk-answering or
restarted server: the gateway cuts the tunnels of a server that leaves its pool) and
never a mismatch.

Usage (from Python, as loadgen.Load):

    load = Tunnels("127.0.0.1", 8080, conns=4, duration=60)
    load.rid = 40_000_000
    load.start(track_ok=True)
    stats = load.join()
"""
import base64, random, socket, time
from collections import Counter

from loadgen import Failure, Threaded, connect_failure


class Tunnels(Threaded):
    def __init__(self, host, port, conns, duration, timeout=15.0, seed=1, app_share=0.2, host_header=None):
        super().__init__("ws", conns, duration)
        self.host, self.port = host, port
        self.timeout, self.app_share = timeout, app_share
        self.rate = conns  # not a rate: 0 is "left out" (Threaded.start)
        rng = random.Random(seed)
        self.seeds = [rng.random() for _ in range(conns)]  # each thread's own generator
        self.host_header = host_header or f"{host}:{port}"
        self.cuts = []
        self.messages = 0

    def _next(self):
        with self.lock:
            self.rid += 1
            self.sent += 1
            return self.rid

    def _worker(self, i):
        rng = random.Random(self.seeds[i])
        while time.monotonic() < self.stop_at:
            rid = self._next()
            prefix = "/app" if rng.random() < self.app_share else ""
            path = f"{prefix}/ws?rid={rid}"
            start = time.monotonic()
            try:
                s = self._open(path, rng)
            except Failure as f:
                self._fail(rid, path, start, f.kind, f.detail, f.status)
                time.sleep(0.2)
                continue
            except socket.timeout:
                self._fail(rid, path, start, "timeout", f"no 101 in {self.timeout}s", None)
                continue
            except OSError as e:
                self._fail(rid, path, start, "reset", repr(e), None)
                continue
            try:
                self._talk(s, rid, path, start, rng)
            finally:
                s.close()

    def _open(self, path, rng):
        """Connects and upgrades: the socket, once the 101's head is read."""
        try:
            s = socket.create_connection((self.host, self.port), timeout=5)
        except OSError as e:
            raise connect_failure(e)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(self.timeout)
        key = base64.b64encode(rng.randbytes(16)).decode()
        try:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host_header}\r\nUser-Agent: pc-bench-wsload\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                d = s.recv(4096)
                if not d:
                    raise Failure("eof-before-response" if not head else "truncated")
                head += d
                if len(head) > 65536:
                    raise Failure("bad-response", "head too long")
        except BaseException:
            s.close()
            raise
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            s.close()
            raise Failure("bad-response", repr(line[:80]))
        if parts[1] != "101":
            s.close()
            raise Failure(f"status-{parts[1]}", status=int(parts[1]))
        extra = head.split(b"\r\n\r\n", 1)[1]
        if extra:
            s.close()
            raise Failure("bad-response", f"{len(extra)} bytes after the 101 before any was sent")
        return s

    def _talk(self, s, rid, path, start, rng):
        opened = time.monotonic()
        life = rng.uniform(2, 20)
        while time.monotonic() < min(opened + life, self.stop_at):
            msg = rng.randbytes(rng.choice([16, 1000, 16384]))
            sent_at = time.monotonic()
            try:
                s.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    d = s.recv(len(msg) - len(got))
                    if not d:
                        return self._cut(rid, path, sent_at, "cut", f"EOF after {time.monotonic() - opened:.1f} s")
                    got += d
            except socket.timeout:
                return self._cut(rid, path, sent_at, "echo-timeout", f"{len(got)} of {len(msg)} bytes in {self.timeout}s")
            except OSError as e:
                return self._cut(rid, path, sent_at, "cut", repr(e))
            if got != msg:
                return self._cut(rid, path, sent_at, "echo-mismatch", f"{len(msg)} bytes")
            with self.lock:
                self.messages += 1
            time.sleep(rng.uniform(0.1, 0.5))
        with self.lock:
            self.ok += 1
            if self.ok_rids is not None:
                self.ok_rids.add(rid)

    def _fail(self, rid, path, start, kind, detail, status):
        with self.lock:
            self.failures.append(self.failure(rid, start, kind, detail, status, False, _Req(path)))

    def _cut(self, rid, path, at, kind, detail):
        with self.lock:
            self.cuts.append({"t": round(at - self.t0, 3), "rid": rid, "kind": kind, "detail": detail[:200],
                              "path": path})

    def summary(self):
        return {"requests": self.sent, "ok": self.ok, "failed": len(self.failures),
                "by_kind": dict(Counter(f["kind"] for f in self.failures)), "messages": self.messages,
                "cut": len(self.cuts), "cuts_by_kind": dict(Counter(c["kind"] for c in self.cuts)),
                "client_connections_opened": self.sent, **self.latency_figures(), "failures": self.failures,
                "cuts": self.cuts}


class _Req:
    """What Tally.failure reads of a request."""
    method, tag = "GET", "ws"

    def __init__(self, path):
        self.path = path
