"""A small, exact HTTP/1.1 load generator for the reliability benchmarks.

Python standard library only (asyncio). It counts every request: a request is OK only
when a complete response with a 2xx status arrived (and, where the request says how
long the body must be, with that many bytes). Everything else is a failure with a kind:

  status-NNN          a response with a non-2xx status
  eof-before-response the connection closed before any byte of the response
  reset               the connection was reset (ECONNRESET / EPIPE)
  truncated           the response head or body ended early, or the body had the wrong size
  bad-response        bytes that are not an HTTP/1.x response
  timeout             no complete response within the client timeout
  connect-refused / connect-error / connect-timeout
                      a new connection to the proxy could not be made

Each failure is recorded with its time, the request id (`rid=N` in the query string, so
that it can be found in an access log), whether the connection was a reused keep-alive
connection, and a detail. Like common HTTP clients (curl, browsers, Go, hyper), the
generator does not send a request on a keep-alive connection that the server has
already closed (FIN seen while idle): it opens a new one and counts that in
`stale_replaced`, not as a failure. A close that arrives after the request was written
is a failure.

Load shapes: a constant rate (`rate` requests/s over `conns` keep-alive connections,
each connection closed-loop with a schedule) or bursts (`bursts`: a list of start times;
at each one every connection sends `burst_size` requests back to back).

Usage from Python:

    load = Load("127.0.0.1", 8080, conns=16, rate=800, duration=30)
    load.start()          # runs in its own thread and event loop
    ...                   # inject faults at load.t0 + x
    stats = load.join()   # dict, see Load.summary()
"""
import asyncio, random, socket, ssl, threading, time
from collections import Counter


class Req:
    """One request to send. `expect_len`: required body length (None = any)."""
    __slots__ = ("method", "path", "headers", "body", "expect_len", "close", "tag")

    def __init__(self, method, path, headers=None, body=b"", expect_len=None, close=False, tag=""):
        self.method, self.path, self.headers, self.body = method, path, headers or {}, body
        self.expect_len, self.close, self.tag = expect_len, close, tag


def simple_get(path="/"):
    """Request factory: GET path?rid=N."""
    sep = "&" if "?" in path else "?"
    return lambda rng, rid: Req("GET", f"{path}{sep}rid={rid}")


class Failure(Exception):
    def __init__(self, kind, detail="", status=None):
        super().__init__(kind)
        self.kind, self.detail, self.status = kind, detail, status


def client_tls(alpn):
    """The clients' TLS for a self-signed gateway certificate (nothing verified), offering
    the ALPN protocol `alpn` ("http/1.1" or "h2")."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    return ctx


def connect_failure(e):
    """The Failure of a connection to the proxy that could not be made (`e`: what connecting raised)."""
    if isinstance(e, (asyncio.TimeoutError, socket.timeout)):
        return Failure("connect-timeout")
    if isinstance(e, ConnectionRefusedError):
        return Failure("connect-refused")
    return Failure("connect-error", repr(e))


class Tally:
    """What a load generator counts (this HTTP/1.1 one and h2loadgen.py's HTTP/2 one):
    requests sent and answered, the failures with their request ids, the latencies of
    the answered ones (seconds)."""

    def __init__(self, label):
        self.label = label  # the protocol, as failures name it: "1.1", "2", "1.1 tls", "2 tls"
        self.rid = 0
        self.ok = 0
        self.sent = 0
        self.failures = []
        self.new_conns = 0
        self.latencies = []
        self.tags = Counter()
        self.ok_rids = None  # set of rids answered OK, kept when track_ok is set
        self.t0 = None
        self.stop_at = None

    def failure(self, rid, start, kind, detail, status, reused, req):
        """One failure as the reports list it (`start`: the request's monotonic start)."""
        return {"t": round(start - self.t0, 3), "latency": round(time.monotonic() - start, 3), "rid": rid,
                "kind": kind, "status": status, "reused_conn": reused, "detail": detail[:200],
                "method": req.method, "path": req.path, "tag": req.tag, "http": self.label}

    def latency_figures(self):
        """p50, p99 and max of the answered requests, and the slowest failure, in ms."""
        lat = sorted(self.latencies)

        def q(p):
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None

        fail_lat = [f["latency"] for f in self.failures]
        return {"p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": round(lat[-1] * 1000, 1) if lat else None,
                "max_failed_ms": round(max(fail_lat) * 1000, 1) if fail_lat else None}


class Threaded(Tally):
    """A Tally whose connections are threads (h2loadgen.py's HTTP/2 load, wsload.py's
    tunnels): `start` runs `_worker(i)` for i in range(conns), each in its thread, unless
    `rate` is 0 (the load left out); `join` waits for them and returns `summary()`."""

    def __init__(self, label, conns, duration):
        super().__init__(label)
        self.conns, self.duration = conns, duration
        self.lock = threading.Lock()
        self._threads = []

    def start(self, track_ok=False):
        if track_ok:
            self.ok_rids = set()
        self.t0 = time.monotonic()
        self.stop_at = self.t0 + self.duration
        if not self.rate:
            return self  # no load (soak.py --without)
        for i in range(self.conns):
            t = threading.Thread(target=self._worker, args=(i,), name=f"{self.label}-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def join(self):
        for t in self._threads:
            t.join()
        return self.summary()


class Load(Tally):
    def __init__(self, host, port, conns, duration, rate=None, bursts=None, burst_size=1,
                 timeout=15.0, make_req=None, seed=1, host_header=None, keep_latencies=True, tls=None):
        super().__init__("1.1 tls" if tls else "1.1")
        self.tls = tls  # an ssl.SSLContext: HTTPS (see client_tls)
        self.host, self.port, self.conns, self.duration = host, port, conns, duration
        self.rate, self.bursts, self.burst_size, self.timeout = rate, bursts, burst_size, timeout
        self.make_req = make_req or simple_get("/")
        self.rng = random.Random(seed)
        self.host_header = host_header or f"{host}:{port}"
        self.keep_latencies = keep_latencies
        self.stale_replaced = 0
        self.timeline = {}  # second -> [ok, failed]
        self._thread = None
        self._stop_now = False

    # ---- running -------------------------------------------------------------------------
    def start(self, track_ok=False):
        if track_ok:
            self.ok_rids = set()
        ready = threading.Event()

        def main():
            asyncio.run(self._run(ready))

        self._thread = threading.Thread(target=main, name="loadgen", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def stop(self):
        """Stop issuing new requests now (in-flight ones complete)."""
        self._stop_now = True

    def join(self):
        self._thread.join()
        return self.summary()

    async def _run(self, ready):
        self.t0 = time.monotonic()
        self.stop_at = self.t0 + self.duration
        ready.set()
        await asyncio.gather(*(self._worker(i) for i in range(self.conns)))

    def _running(self):
        return not self._stop_now and time.monotonic() < self.stop_at

    async def _sleep_until(self, t):
        while True:
            now = time.monotonic()
            if now >= t or not self._running():
                return
            await asyncio.sleep(min(t - now, 0.2))

    async def _worker(self, i):
        conn = [None, None, 0]  # reader, writer, requests on this connection
        try:
            if self.bursts is not None:
                for b in self.bursts:
                    await self._sleep_until(self.t0 + b)
                    for _ in range(self.burst_size):
                        if not self._running():
                            break
                        await self._one(conn)
                    if not self._running():
                        break
            else:
                period = self.conns / self.rate
                nxt = self.t0 + period * i / self.conns
                while self._running():
                    await self._sleep_until(nxt)
                    if not self._running():
                        break
                    await self._one(conn)
                    now = time.monotonic()
                    nxt = max(nxt + period, now - period)
        finally:
            self._close(conn)

    def _close(self, conn):
        if conn[1] is not None:
            try:
                conn[1].close()
            except Exception:
                pass
        conn[0] = conn[1] = None
        conn[2] = 0

    async def _connect(self, conn):
        try:
            tls = {"ssl": self.tls, "server_hostname": "localhost"} if self.tls else {}
            r, w = await asyncio.wait_for(asyncio.open_connection(self.host, self.port, limit=1 << 20, **tls), 5)
        except (asyncio.TimeoutError, OSError) as e:
            raise connect_failure(e)
        s = w.get_extra_info("socket")
        if s is not None:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn[0], conn[1], conn[2] = r, w, 0
        self.new_conns += 1

    async def _one(self, conn):
        self.rid += 1
        rid = self.rid
        req = self.make_req(self.rng, rid)
        self.tags[req.tag] += 1
        start = time.monotonic()
        reused = False
        self.sent += 1
        try:
            if conn[1] is not None and (conn[0].at_eof() or conn[1].is_closing()):
                self.stale_replaced += 1
                self._close(conn)
            if conn[1] is None:
                await self._connect(conn)
            reused = conn[2] > 0
            conn[2] += 1
            status, keep = await asyncio.wait_for(self._exchange(conn, req), self.timeout)
            if not keep:
                self._close(conn)
            if 200 <= status < 300:
                self._record_ok(rid, start)
            else:
                raise Failure(f"status-{status}", status=status)
        except Failure as f:
            self._record_fail(rid, start, f.kind, f.detail, f.status, reused, req)
            if not f.kind.startswith("status-"):
                self._close(conn)
        except asyncio.TimeoutError:
            self._record_fail(rid, start, "timeout", f"no complete response in {self.timeout}s", None, reused, req)
            self._close(conn)
        except (ConnectionResetError, BrokenPipeError) as e:
            self._record_fail(rid, start, "reset", repr(e), None, reused, req)
            self._close(conn)
        except OSError as e:
            self._record_fail(rid, start, "reset", repr(e), None, reused, req)
            self._close(conn)

    def _record_ok(self, rid, start):
        now = time.monotonic()
        self.ok += 1
        if self.ok_rids is not None:
            self.ok_rids.add(rid)
        if self.keep_latencies:
            self.latencies.append(now - start)
        self.timeline.setdefault(int(start - self.t0), [0, 0])[0] += 1

    def _record_fail(self, rid, start, kind, detail, status, reused, req):
        self.failures.append(self.failure(rid, start, kind, detail, status, reused, req))
        self.timeline.setdefault(int(start - self.t0), [0, 0])[1] += 1

    async def _exchange(self, conn, req):
        r, w = conn[0], conn[1]
        head = [f"{req.method} {req.path} HTTP/1.1", f"Host: {self.host_header}", "User-Agent: pc-bench-loadgen"]
        for k, v in req.headers.items():
            head.append(f"{k}: {v}")
        if req.body or req.method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(req.body)}")
        if req.close:
            head.append("Connection: close")
        w.write(("\r\n".join(head) + "\r\n\r\n").encode() + req.body)
        await w.drain()
        try:
            raw = await r.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                raise Failure("eof-before-response")
            raise Failure("truncated", f"head cut after {len(e.partial)} bytes")
        except asyncio.LimitOverrunError:
            raise Failure("bad-response", "head too long")
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise Failure("bad-response", repr(lines[0][:80]))
        status = int(parts[1])
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        keep = not req.close and parts[0] == "HTTP/1.1" and "close" not in hdrs.get("connection", "").lower()
        n = 0
        try:
            if req.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                pass
            elif "chunked" in hdrs.get("transfer-encoding", "").lower():
                while True:
                    line = await r.readuntil(b"\r\n")
                    size = int(line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while (await r.readuntil(b"\r\n")) != b"\r\n":
                            pass
                        break
                    await r.readexactly(size + 2)
                    n += size
            elif "content-length" in hdrs:
                n = int(hdrs["content-length"])
                await r.readexactly(n)
            else:
                body = await r.read()
                n = len(body)
                keep = False
        except asyncio.IncompleteReadError as e:
            raise Failure("truncated", f"status {status}: body cut ({len(e.partial)} more bytes read)", status)
        except ValueError as e:
            raise Failure("bad-response", f"status {status}: bad chunk framing {e}", status)
        if 200 <= status < 300 and req.expect_len is not None and req.method != "HEAD" and n != req.expect_len:
            raise Failure("truncated", f"status {status}: body {n} bytes, expected {req.expect_len}", status)
        return status, keep

    # ---- results -------------------------------------------------------------------------
    def summary(self):
        kinds = Counter(f["kind"] for f in self.failures)
        return {"requests": self.sent, "ok": self.ok, "failed": len(self.failures), "by_kind": dict(kinds),
                "stale_keepalive_replaced": self.stale_replaced, "client_connections_opened": self.new_conns,
                **self.latency_figures(),
                "failures": self.failures,
                "timeline": {k: v for k, v in sorted(self.timeline.items())}}
