"""An exact HTTP/2 load generator for the soak, beside loadgen.py's HTTP/1.1 one and
counting the same way: cleartext with prior knowledge, or over TLS with ALPN `h2`
(`tls=loadgen.client_tls("h2")`, since 2026-12-06).

Needs the `h2` Python package (Debian: python3-h2; bench/run.sh installs it). Each
connection is a thread with a blocking socket that keeps up to `streams` requests in
flight, opening a new stream on its schedule (`rate` requests/s over all connections).
A request is OK only when its stream ended with a 2xx status (and, where the request
says how long the body must be, with that many bytes). Failures, with loadgen.py's
kinds where they mean the same:

  status-NNN          a response with a non-2xx status
  reset               the gateway reset the stream (RST_STREAM; the code is in the detail)
  eof-before-response the connection ended before the stream's response head
  truncated           the connection ended, or the stream was reset, after the head
  timeout             no complete response within the client timeout (the stream is reset)
  connect-refused / connect-error / connect-timeout

A GOAWAY says which streams the gateway took (RFC 9113 §6.8): those above its last
stream id were not processed, and like every HTTP/2 client (curl, browsers, Go) the
generator sends them again on a new connection with the same request id, counting
them in `goaway_retried`, not as failures. Streams at or below it cannot go on here:
Python's `h2` (4.4) takes no frame but GOAWAY after one, so they count as failures.
The gateway sends GOAWAY only to a connection with no stream open (idle) or when it
shuts down, which the soak does not do, so none has been seen.

Usage (from Python, as loadgen.Load):

    load = H2Load("127.0.0.1", 8080, conns=4, rate=100, duration=60, make_req=f)
    load.rid = 20_000_000
    load.start(track_ok=True)
    stats = load.join()
"""
import random, select, socket, time
from collections import Counter

import h2.config, h2.connection, h2.errors, h2.events, h2.exceptions

from loadgen import Failure, Threaded, connect_failure


class H2Load(Threaded):
    def __init__(self, host, port, conns, duration, rate, make_req, streams=4, timeout=15.0, seed=1,
                 host_header=None, tls=None):
        super().__init__("2 tls" if tls else "2", conns, duration)
        self.tls = tls  # an ssl.SSLContext offering ALPN h2 (loadgen.client_tls("h2")), or None: prior knowledge
        self.host, self.port = host, port
        self.rate, self.make_req, self.streams, self.timeout = rate, make_req, streams, timeout
        self.rng = random.Random(seed)
        self.authority = host_header or f"{host}:{port}"
        self.goaway_retried = 0

    # ---- one connection's thread --------------------------------------------------------
    def _next(self):
        with self.lock:
            self.rid += 1
            rid = self.rid
            req = self.make_req(self.rng, rid)
            self.tags[req.tag] += 1
            self.sent += 1
        return rid, req

    def _worker(self, i):
        period = self.conns / self.rate
        nxt = self.t0 + period * i / self.conns
        conn = None
        retry = []  # (rid, req) a GOAWAY left unprocessed, to be sent again first
        while True:
            now = time.monotonic()
            running = now < self.stop_at
            if conn is None:
                if not running and not retry:
                    return
                try:
                    conn = _Conn(self)
                except Failure as f:
                    rid, req = retry.pop(0) if retry else self._next()
                    self._fail(rid, req, time.monotonic(), f.kind, f.detail, None, False)
                    nxt = max(nxt + period, time.monotonic() - period)
                    time.sleep(0.05)
                    continue
            try:
                room = conn.open_for_more() and len(conn.inflight) < self.streams
                if room and (retry or (running and now >= nxt)):
                    if retry:
                        rid, req = retry.pop(0)
                    else:
                        rid, req = self._next()
                        nxt = max(nxt + period, now - period)
                    conn.send(rid, req)
                    continue
                if not running and not conn.inflight and not retry:
                    conn.close()
                    return
                # Until the next request is due, or, with no room for it, until the
                # gateway sends something (select returns then): never a busy loop.
                wait = max(0.0, min(nxt - time.monotonic(), 0.2)) if running and room else 0.2
                conn.pump(wait)
            except Exception as e:  # noqa: BLE001 - a bug here must show, not end the thread unseen
                conn._lost(f"load generator error: {e!r}")
            retry.extend(conn.unprocessed)
            conn.unprocessed = []
            if conn.dead or (conn.goaway and not conn.inflight):
                conn.close()
                conn = None

    # ---- results ------------------------------------------------------------------------
    def _ok(self, rid, start):
        with self.lock:
            self.ok += 1
            if self.ok_rids is not None:
                self.ok_rids.add(rid)
            self.latencies.append(time.monotonic() - start)

    def _fail(self, rid, req, start, kind, detail, status, reused):
        with self.lock:
            self.failures.append(self.failure(rid, start, kind, detail, status, reused, req))

    def summary(self):
        return {"requests": self.sent, "ok": self.ok, "failed": len(self.failures),
                "by_kind": dict(Counter(f["kind"] for f in self.failures)), "goaway_retried": self.goaway_retried,
                "client_connections_opened": self.new_conns, **self.latency_figures(), "failures": self.failures}


class _Stream:
    __slots__ = ("rid", "req", "start", "status", "got", "body", "reused")

    def __init__(self, rid, req, reused):
        self.rid, self.req, self.start, self.reused = rid, req, time.monotonic(), reused
        self.status, self.got, self.body = None, 0, memoryview(req.body)


class _Conn:
    """One HTTP/2 connection of an H2Load, driven by its worker thread."""

    def __init__(self, load):
        self.load = load
        try:
            self.sock = socket.create_connection((load.host, load.port), timeout=5)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if load.tls is not None:
                self.sock = load.tls.wrap_socket(self.sock, server_hostname="localhost")
        except OSError as e:  # ssl.SSLError included
            raise connect_failure(e)
        alpn = self.sock.selected_alpn_protocol() if load.tls is not None else "h2"
        if alpn != "h2":
            self.sock.close()
            raise Failure("connect-error", f"ALPN chose {alpn!r}, not h2")
        self.sock.settimeout(5)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(16 * 2**20)  # the connection's window: no stall on big answers
        self.inflight = {}
        self.unprocessed = []
        self.dead = False
        self.goaway = False
        self.requests = 0
        with load.lock:
            load.new_conns += 1
        self._flush()

    def open_for_more(self):
        return not self.dead and not self.goaway

    def send(self, rid, req):
        sid = self.h2.get_next_available_stream_id()
        st = _Stream(rid, req, self.requests > 0)
        self.requests += 1
        headers = [(":method", req.method), (":path", req.path), (":scheme", "https" if self.load.tls else "http"),
                   (":authority", self.load.authority), ("user-agent", "pc-bench-h2loadgen")]
        headers += [(k.lower(), v) for k, v in req.headers.items()]
        if req.body or req.method in ("POST", "PUT"):
            headers.append(("content-length", str(len(req.body))))
        self.inflight[sid] = st
        self.h2.send_headers(sid, headers, end_stream=not req.body and req.method not in ("POST", "PUT"))
        self._send_bodies()
        self._flush()

    def _send_bodies(self):
        for sid, st in list(self.inflight.items()):
            if st.body is None:
                continue
            if not len(st.body):
                if st.req.body or st.req.method in ("POST", "PUT"):
                    self._safe(lambda: self.h2.end_stream(sid))
                st.body = None
                continue
            try:
                room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            except h2.exceptions.StreamClosedError:
                st.body = None
                continue
            while room > 0 and len(st.body):
                n = min(room, len(st.body))
                self.h2.send_data(sid, st.body[:n].tobytes())
                st.body = st.body[n:]
                room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if not len(st.body):
                self._safe(lambda: self.h2.end_stream(sid))
                st.body = None

    def _safe(self, fn):
        try:
            fn()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass

    def _flush(self):
        data = self.h2.data_to_send()
        if data and not self.dead:
            try:
                self.sock.sendall(data)
            except OSError:
                self._lost("connection lost while sending")

    def pump(self, wait):
        if self.dead:
            return
        try:
            # Bytes TLS has already decrypted are not on the socket for select to see.
            pending = self.load.tls is not None and self.sock.pending() > 0
            r = [self.sock] if pending else select.select([self.sock], [], [], wait)[0]
        except (OSError, ValueError):
            r = []
        if r:
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                # Over TLS, select saw part of a record (or one without data, a session
                # ticket) and the read waited for more: nothing yet, not a lost connection.
                data = None
            except OSError as e:
                data = None
                self._lost(repr(e))
            if data == b"":
                self._lost("EOF")
            elif data:
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as e:
                    self._lost(f"protocol error: {e!r}")
                    events = []
                for ev in events:
                    self._event(ev)
                self._send_bodies()
                self._flush()
        now = time.monotonic()
        for sid, st in list(self.inflight.items()):
            if now - st.start > self.load.timeout:
                del self.inflight[sid]
                self._safe(lambda: self.h2.reset_stream(sid, h2.errors.ErrorCodes.CANCEL))
                self.load._fail(st.rid, st.req, st.start, "timeout", f"no complete response in {self.load.timeout}s",
                                st.status, st.reused)
        self._flush()

    def _event(self, ev):
        load = self.load
        if isinstance(ev, h2.events.ResponseReceived):
            st = self.inflight.get(ev.stream_id)
            if st is not None:
                st.status = int(dict(ev.headers).get(":status", "0"))
        elif isinstance(ev, h2.events.DataReceived):
            st = self.inflight.get(ev.stream_id)
            if st is not None:
                st.got += len(ev.data)
            if ev.flow_controlled_length:
                self._safe(lambda: self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id))
        elif isinstance(ev, h2.events.StreamEnded):
            st = self.inflight.pop(ev.stream_id, None)
            if st is None:
                return
            req = st.req
            if st.status is None or not 200 <= st.status < 300:
                load._fail(st.rid, req, st.start, f"status-{st.status}", "", st.status, st.reused)
            elif req.expect_len is not None and req.method != "HEAD" and st.got != req.expect_len:
                load._fail(st.rid, req, st.start, "truncated",
                           f"status {st.status}: body {st.got} bytes, expected {req.expect_len}", st.status, st.reused)
            else:
                load._ok(st.rid, st.start)
        elif isinstance(ev, h2.events.StreamReset):
            st = self.inflight.pop(ev.stream_id, None)
            if st is not None:
                kind = "reset" if st.status is None else "truncated"
                load._fail(st.rid, st.req, st.start, kind, f"RST_STREAM {ev.error_code!r}", st.status, st.reused)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = True
            last = ev.last_stream_id if ev.last_stream_id is not None else 0
            for sid in sorted(self.inflight):
                if sid > last:
                    st = self.inflight.pop(sid)
                    self.unprocessed.append((st.rid, st.req))
                    with load.lock:
                        load.goaway_retried += 1
            if ev.error_code != h2.errors.ErrorCodes.NO_ERROR:
                self._lost(f"GOAWAY {ev.error_code!r}")

    def _lost(self, why):
        """The connection ended: every stream still in flight failed."""
        if self.dead:
            return
        self.dead = True
        for st in self.inflight.values():
            kind = "eof-before-response" if st.status is None else "truncated"
            self.load._fail(st.rid, st.req, st.start, kind, why, st.status, st.reused)
        self.inflight = {}

    def close(self):
        if not self.dead:
            self._safe(lambda: self.h2.close_connection())
            self._flush()
        self.dead = True
        try:
            self.sock.close()
        except OSError:
            pass
