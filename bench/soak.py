"""Soak: portcullis under a mixed load for N minutes while its backends die, freeze, restart
and answer garbage; then check that it is still sound.

    python3 bench/soak.py [--minutes 10] [--bin PATH] [--seed 1]

Set-up (127.0.0.1; portcullis pinned to core 1, everything else on core 0):
  - address pool `mixed`: three `portcullis demo-app` processes A, B, C (C is replaced by a
    raw TCP junk server during the garbage events);
  - app pool `apppool`: the hosted app `web` (2 demo-app instances), reached under /app/*;
  - settings: request_timeout 5 s, probe GET /health every 1 s (timeout 1 s, unhealthy
    after 2, healthy after 2), outlier_consecutive_errors 1, retry_idempotent_on_reset on.
Load (bench/loadgen.py, 16 keep-alive connections, 300 req/s): GET / (35 %), GET
/bytes?n=100..256 KiB (20 %), GET /slow?ms=1..300 (10 %), POST /echo with a 10 B..64 KiB
body (15 %, not retryable), HEAD / (5 %), GET /headers (5 %); 20 % of them under /app/;
10 % with `Connection: close`. Every request carries `rid=N` in its query string.
Beside it, since 2026-12-06 (the twentieth session), an HTTP/2 load (bench/h2loadgen.py,
prior knowledge, 4 connections of up to 4 streams each, 100 req/s, the same mix: bodies
and big answers over HTTP/2's flow control; rids from 20,000,001) and hostile clients
(bench/hostile_clients.py, one attack every 1-3 s: CL+TE smuggling, an oversized head,
slowloris, a client that leaves mid-upload, one that stops reading an 8 MiB answer, an
HTTP/2 rapid reset, an HTTP/2 body that breaks its content-length; rids from 30,000,001,
left out of the per-request checks).
Since 2026-12-06 (the twenty-first session) an https listener on a second port (a new
self-signed ECDSA P-256 certificate, re-read at every reload) takes two more loads: HTTP/1.1
over TLS (4 keep-alive connections, 60 req/s, rids from 15,000,001) and HTTP/2 over TLS
(ALPN h2, 2 connections of up to 4 streams, 40 req/s, rids from 25,000,001), the same mix;
and the hostile clients add an HTTP/2 field value padded with a space, plain HTTP to the
https port, a junk ClientHello and half a ClientHello. And WebSocket tunnels
(bench/wsload.py: 4 open at a time, each echoing messages of 16 B-16 KiB for 2-20 s, rids
from 27,000,001): a tunnel's record is written when it ends, so each must have one, and a
tunnel may be cut only at a backend fault (check 6).
Phases: 120 s warm-up with all of the load, the HTTP/2 one and the hostile clients (30 s
of HTTP/1.1 alone until 2026-12-06: with HTTP/2 in the mix the heap takes 100-200 s to
reach its loaded level, docs/benchmarks.md section 5; the allocator gives much of it
back in the idle pause, so the measured phase climbs again); idle pause (baseline fds
and RSS); N minutes of load with seeded
random events, one at a time, 4-12 s apart:
  kill     kill -9 one of A/B/C, start it again 2-10 s later
  freeze   SIGSTOP one of A/B/C for 1-8 s, then SIGCONT
  garbage  C is stopped; a junk server answers on its port for 10-25 s (non-HTTP bytes, a
           bad status line, or a 200 head whose body is cut), then C starts again
  app-kill kill -9 one hosted instance (the app host restarts it)
  app-restart  `portcullis app restart web`
  reload   SIGHUP (the config file rewritten with a new generation comment)
Then idle again and the checks:
  1. portcullis is still running;
  2. every request the client saw fail has an access-log record (found by rid) whose
     error_info is non-empty and not ERRORINFO_NO_ERROR;
  3. open fds (/proc/PID/fd) back to the baseline (+5 at most) once idle pooled backend
     connections expired (4 s idle timeout);
  4. RSS at the end at most 10 % above the RSS after warm-up: the median of the RSS samples
     (every 2 s) in the last fifth of the measured phase against the median in a fifth
     from its 60th second on, once the loads have brought the allocator back to the
     warm-up's working set (common.py RSS_RAMP_S; single readings swing by +-15 % within seconds;
     they are reported too, with the slope of a straight-line fit and the growth with
     the first window from 0 s). `--recheck FILE...` applies the rule to saved runs;
  5. the hostile clients got what the hostile-input tests expect (400 or 431 and the
     connection closed, GOAWAY ENHANCE_YOUR_CALM, RST_STREAM PROTOCOL_ERROR), and the
     records they must leave are there and say what they must;
  6. WebSocket tunnels were cut (EOF or reset before the client closed them, or an echo
     that never came back) only at a fault of the servers they go to (kill, freeze or
     garbage for the pool, app-kill or app-restart for the hosted app: from 1 s before
     it to 15 s after it ended), and every echo that came back was the bytes sent.
Checks 2 and 3 count every load's requests and tunnels. `--without h2,tls,ws,hostile` leaves
parts out.
Also reported (not part of the verdict): requests without a record, records with an
error whose request the client saw succeed, and RSS split into heap (RssAnon), mapped
files (RssFile) and the heap's transparent huge pages (AnonHugePages). Results:
bench/soak-results.json.
"""
import argparse, json, os, random, shutil, signal, subprocess, sys, tempfile, threading, time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, TOKEN, Setup, start_checked, alive, api, brief, copy_binary, fd_count, kill_and_reap, machine, pc_cli,  # noqa: E402
                    rss_windows,
                    make_certificate, pin_self, raise_nofile, read_access_log, rid_of, rss, rss_parts, signal_proc,
                    summarize_access_log, tools_check, wait_app_ready, wait_port)
from loadgen import Load, Req, client_tls  # noqa: E402
from h2loadgen import H2Load  # noqa: E402
from hostile_clients import Hostile  # noqa: E402
from wsload import Tunnels  # noqa: E402

FRONT, FRONT_TLS, CONSOLE = 14381, 14382, 14390  # below the e2e tests' 15000-32000 (tests/e2e/support.rs)
ADDR = {"A": 14385, "B": 14386, "C": 14387}
CONNS, RATE = 16, 300
H2_CONNS, H2_RATE, H2_STREAMS = 4, 100, 4
TLS_CONNS, TLS_RATE = 4, 60  # HTTP/1.1 over TLS (since 2026-12-06)
H2_TLS_CONNS, H2_TLS_RATE = 2, 40  # HTTP/2 over TLS, ALPN h2
WS_CONNS = 4  # WebSocket tunnels open at a time (since 2026-12-06)
FD_SLACK = 5
RSS_GROWTH_MAX = 0.10
RID_BASE = 10_000_000  # rids of the measured phase start here (warm-up rids are below)
TLS_RID_BASE = 15_000_000  # the HTTP/1.1-over-TLS load's
H2_RID_BASE = 20_000_000  # the HTTP/2 load's
H2_TLS_RID_BASE = 25_000_000  # the HTTP/2-over-TLS load's
WS_RID_BASE = 27_000_000  # the WebSocket tunnels'
HOSTILE_RID_BASE = 30_000_000  # the hostile clients' (left out of the per-request checks)
WARM_HOSTILE_RID_BASE = 5_000_000  # theirs in the warm-up (below RID_BASE: not checked)

JUNK = r"""
import random, socket, sys, threading
port = int(sys.argv[1]); rng = random.Random(port)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(256)
def serve(c, kind):
    try:
        c.settimeout(1.0)
        try: c.recv(65536)
        except OSError: pass
        if kind == 0: c.sendall(bytes(rng.randrange(256) for _ in range(64)) + b"\r\n\r\n")
        elif kind == 1: c.sendall(b"HTTP/1.1 two hundred OK\r\nContent-Length: 2\r\n\r\nok")
        else: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c, rng.randrange(3)), daemon=True).start()
"""


def config(w, gen=0):
    pool = ", ".join(f'"127.0.0.1:{p}"' for p in ADDR.values())
    return f"""# generation {gen}
[gateway]
state_dir = "{w}/state"
shutdown_timeout = "5s"
[console]
listen = "127.0.0.1:{CONSOLE}"
token = "{TOKEN}"
[[listeners]]
name = "web"
listen = "127.0.0.1:{FRONT}"
[[listeners]]
name = "webtls"
listen = "127.0.0.1:{FRONT_TLS}"
protocol = "https"
tls = {{ certificate = "{w}/cert.pem", key = "{w}/key.pem" }}
[[backend_pools]]
name = "mixed"
addresses = [{pool}]
[[backend_pools]]
name = "apppool"
app = "web"
[[backend_http_settings]]
name = "s"
request_timeout = 5
probe = "p"
outlier_consecutive_errors = 1
retry_idempotent_on_reset = true
[[backend_http_settings]]
name = "sa"
request_timeout = 5
probe = "p"
path = "/"
outlier_consecutive_errors = 1
[[probes]]
name = "p"
path = "/health"
interval = 1
timeout = 1
unhealthy_threshold = 2
healthy_threshold = 2
[[request_routing_rules]]
name = "r"
rule_type = "path_based"
listener = "web"
priority = 1
url_path_map = "m"
[[request_routing_rules]]
name = "rt"
rule_type = "path_based"
listener = "webtls"
priority = 2
url_path_map = "m"
[[url_path_maps]]
name = "m"
default_backend_pool = "mixed"
default_backend_http_settings = "s"
[[url_path_maps.path_rules]]
name = "app"
paths = ["/app/*"]
backend_pool = "apppool"
backend_http_settings = "sa"
[[apps]]
name = "web"
command = ["taskset", "-c", "0", "{w}/portcullis", "demo-app"]
instances = 2
health_check_path = "/health"
stop_timeout = "5s"
"""


def make_req(rng, rid):
    prefix = "/app" if rng.random() < 0.2 else ""
    close = rng.random() < 0.1
    r = rng.random()
    if r < 0.35:
        return Req("GET", f"{prefix}/?rid={rid}", close=close, tag="get")
    if r < 0.55:
        n = rng.choice([100, 4096, 65536, 262144])
        return Req("GET", f"{prefix}/bytes?n={n}&rid={rid}", expect_len=n, close=close, tag="bytes")
    if r < 0.65:
        return Req("GET", f"{prefix}/slow?ms={rng.randint(1, 300)}&rid={rid}", close=close, tag="slow")
    if r < 0.80:
        body = rng.randbytes(rng.choice([10, 1000, 65536]))
        return Req("POST", f"{prefix}/echo?rid={rid}", headers={"Content-Type": "application/octet-stream"},
                   body=body, expect_len=len(body), close=close, tag="post")
    if r < 0.85:
        return Req("HEAD", f"{prefix}/?rid={rid}", close=close, tag="head")
    return Req("GET", f"{prefix}/headers?rid={rid}", close=close, tag="headers")


class Soak:
    def __init__(self, w, binary, seed):
        self.w, self.bin = Path(w), binary
        self.s = Setup(self.w)
        self.rng = random.Random(seed * 7919 + 1)
        self.events = []
        self.t0 = None
        self.gen = 0
        self.junk = False
        self.samples = []
        # The measured phase's planned length, seconds (set by main).
        self.duration = None
        self.sampling = False

    @property
    def pc(self):
        return self.s.procs["portcullis"]

    def now(self):
        return round(time.monotonic() - self.t0, 2) if self.t0 else None

    def start_demo(self, name):
        start_checked(self.s, name, [str(self.bin), "demo-app", "--port", str(ADDR[name])], pin=0, port=ADDR[name])

    def start(self):
        for n in ADDR:
            self.start_demo(n)
        make_certificate(self.w)
        (self.w / "pc.toml").write_text(config(self.w))
        start_checked(self.s, "portcullis", [str(self.bin), "run", "-c", str(self.w / "pc.toml")], pin=1, port=FRONT)
        wait_app_ready(f"127.0.0.1:{CONSOLE}", "web", 2)
        time.sleep(2)

    def stop(self):
        for p in self.s.procs.values():
            signal_proc(p, signal.SIGCONT)
        self.s.stop()

    # ---- sampling ---------------------------------------------------------------------------
    def sampler(self):
        pid = self.pc.pid
        while self.sampling:
            parts = rss_parts(pid)
            self.samples.append({"t": self.now(), "rss": rss(pid), "anon": parts["anon"], "file": parts["file"],
                                 "thp": parts["thp"], "fds": fd_count(pid)})
            time.sleep(2)

    def idle_figures(self, baseline_fds=None, wait=6.0, limit=30.0):
        """fds (minimum of a few readings, so a probe's socket in flight does not count) and RSS,
        after the idle backend connections expired. With baseline_fds, waits up to `limit`
        seconds for the count to come back."""
        time.sleep(wait)
        end = time.time() + limit
        while True:
            readings = []
            for _ in range(8):
                readings.append(fd_count(self.pc.pid))
                time.sleep(0.25)
            fds = min(readings)
            if baseline_fds is None or fds <= baseline_fds + FD_SLACK or time.time() > end:
                return fds, rss(self.pc.pid)
            time.sleep(1)

    # ---- events -----------------------------------------------------------------------------
    def event(self, kind, **kw):
        e = {"t": self.now(), "event": kind} | kw
        self.events.append(e)
        print(f"  t={e['t']:7.1f} {kind} {kw if kw else ''}", flush=True)
        return e

    def do_kill(self):
        name = self.rng.choice(["A", "B"] + ([] if self.junk else ["C"]))
        down = round(self.rng.uniform(2, 10), 1)
        e = self.event("kill", backend=name, down_s=down)
        kill_and_reap(self.s.procs[name], signal.SIGKILL)
        time.sleep(down)
        self.start_demo(name)
        e["end"] = self.now()

    def do_freeze(self):
        name = self.rng.choice(["A", "B", "C"])
        secs = round(self.rng.uniform(1, 8), 1)
        e = self.event("freeze", backend=name, frozen_s=secs)
        signal_proc(self.s.procs[name], signal.SIGSTOP)
        time.sleep(secs)
        signal_proc(self.s.procs[name], signal.SIGCONT)
        e["end"] = self.now()

    def do_garbage(self):
        secs = round(self.rng.uniform(10, 25), 1)
        e = self.event("garbage", backend="C", junk_s=secs)
        kill_and_reap(self.s.procs["C"], signal.SIGTERM)
        self.junk = True
        start_checked(self.s, "junk", [sys.executable, "-c", JUNK, str(ADDR["C"])], pin=0, port=ADDR["C"])
        time.sleep(secs)
        kill_and_reap(self.s.procs.pop("junk"), signal.SIGKILL)
        self.start_demo("C")
        self.junk = False
        e["end"] = self.now()

    def do_app_kill(self):
        try:
            _, a = api(f"127.0.0.1:{CONSOLE}", "GET", "/api/apps/web")
            inst = [i for i in a["instances"] if i.get("pid")]
            victim = self.rng.choice(inst)
            e = self.event("app-kill", instance=victim["id"], pid=victim["pid"])
            os.kill(victim["pid"], signal.SIGKILL)
        except Exception as ex:
            e = self.event("app-kill", error=repr(ex))
        time.sleep(2)
        e["end"] = self.now()

    def do_app_restart(self):
        e = self.event("app-restart")
        rc, out = pc_cli(self.bin, f"127.0.0.1:{CONSOLE}", "app", "restart", "web")
        e["result"] = f"exit {rc}: {out.splitlines()[0] if out else ''}"[:120]
        time.sleep(3)
        e["end"] = self.now()

    def do_reload(self):
        self.gen += 1
        (self.w / "pc.toml").write_text(config(self.w, self.gen))
        e = self.event("reload", generation=self.gen)
        signal_proc(self.pc, signal.SIGHUP)
        time.sleep(1)
        e["end"] = self.now()

    def chaos(self, until):
        actions = [(self.do_kill, 3), (self.do_freeze, 3), (self.do_garbage, 2), (self.do_app_kill, 2),
                   (self.do_app_restart, 1), (self.do_reload, 1)]
        fns, weights = zip(*actions)
        while True:
            gap = self.rng.uniform(4, 12)
            if time.monotonic() + gap + 30 > until:
                return
            time.sleep(gap)
            if not alive(self.pc.pid):
                self.event("portcullis is gone")
                return
            fn = self.rng.choices(fns, weights)[0]
            try:
                fn()
            except Exception as ex:  # an injection that failed is reported, the soak goes on
                self.event("injection failed", action=fn.__name__, error=repr(ex)[:200])
                for n in ADDR:
                    if n in self.s.procs:
                        signal_proc(self.s.procs[n], signal.SIGCONT)
                junk = self.s.procs.pop("junk", None)
                if junk is not None:
                    kill_and_reap(junk)
                    self.junk = False
                for n in ADDR:  # make sure A, B and C run again
                    if n not in self.s.procs or self.s.procs[n].poll() is not None:
                        try:
                            self.start_demo(n)
                        except Exception as ex2:
                            self.event("restart failed", backend=n, error=repr(ex2)[:200])


# The loads, each with its own range of request ids: (key in the results, label, TLS, protocol,
# connections, req/s, first rid - 1 in the measured phase, the part --without leaves out).
LOADS = [
    ("client", "HTTP/1.1", False, "h1", CONNS, RATE, RID_BASE, None),
    ("client_tls", "HTTP/1.1 over TLS", True, "h1", TLS_CONNS, TLS_RATE, TLS_RID_BASE, "tls"),
    ("client_h2", "HTTP/2", False, "h2", H2_CONNS, H2_RATE, H2_RID_BASE, "h2"),
    ("client_h2_tls", "HTTP/2 over TLS", True, "h2", H2_TLS_CONNS, H2_TLS_RATE, H2_TLS_RID_BASE, "tls"),
    ("client_ws", "WebSocket tunnels", False, "ws", WS_CONNS, None, WS_RID_BASE, "ws"),
]
# Each load's seed, added to --seed, in the measured phase and in the warm-up: the
# plaintext loads keep the seeds of the runs before the TLS loads came, and none is the
# hostile clients' (+1002 in the warm-up, +3000 after it).
SEEDS = {"client": (0, 1000), "client_h2": (2000, 1001), "client_tls": (4000, 1003),
         "client_h2_tls": (5000, 1004), "client_ws": (6000, 1005)}
# The events a WebSocket tunnel may be cut at, by where it goes: its server left (killed,
# stopped for the junk server, an app instance killed or restarted) or was ejected (a
# freeze's timeouts). A tunnel to the pool cut at an app event, or the other way round,
# is not explained.
TUNNEL_CUTTERS = {"pool": ("kill", "freeze", "garbage"), "app": ("app-kill", "app-restart")}


def make_loads(dur, seed, without, measured):
    """One generator per LOADS entry (a part left out gets rate 0 and sends nothing), started;
    in the measured phase with their rid bases and the answered rids tracked."""
    out = []
    for key, _, tls, proto, conns, rate, base, part in LOADS:
        seed_of = seed + SEEDS[key][0 if measured else 1]
        # Each load's rids must stay below the next range's start (the hostile clients' last).
        room = min(b for b in [*(entry[6] for entry in LOADS), HOSTILE_RID_BASE] if b > base) - base
        assert (rate or 0) * dur < room, f"{key}: {rate} req/s for {dur} s would reach the next rid range"
        left_out = part in without or (proto == "h2" and "h2" in without)
        rate = 0 if left_out else rate
        port = FRONT_TLS if tls else FRONT
        if proto == "ws":
            g = Tunnels("127.0.0.1", port, 0 if left_out else conns, dur, seed=seed_of)
            rate = g.rate
        elif proto == "h2":
            g = H2Load("127.0.0.1", port, conns, dur, rate=rate, make_req=make_req, streams=H2_STREAMS,
                       seed=seed_of, tls=client_tls("h2") if tls else None)
        else:
            g = Load("127.0.0.1", port, conns, dur, rate=rate, make_req=make_req, seed=seed_of,
                     keep_latencies=measured, tls=client_tls("http/1.1") if tls else None)
        if measured:
            g.rid = base
        if rate:
            g.start(track_ok=measured)
        else:
            g.t0 = time.monotonic()
            g.stop_at = g.t0
            g.ok_rids = set() if measured else None
        out.append((key, g, base))
    return out


def join_loads(loads):
    return [(key, g.join() if g.rate else g.summary(), g, base) for key, g, base in loads]




def rss_figures(samples, duration=None):
    """The RSS check's figures from the sampler's readings (`t` seconds into the
    measured phase, `rss`, `anon`, `file`, `thp` bytes): the median in the first
    window (a fifth of the phase, at least 30 s, from RSS_RAMP_S on when the phase
    is long enough for both windows after it, else from 0) against the median in the
    last, their growth (a fraction), the slope of a straight-line fit after the ramp
    (MiB a minute), the same two medians for each part of RSS, and for comparison the
    growth with the first window from 0 s, the rule until 2026-12-07 (the
    twenty-fourth session). With `duration` (seconds, the phase's planned length),
    samples after it are left out: the sampler takes one more as the loads end, with
    the gateway already idle."""
    if duration is not None:
        samples = [s for s in samples if s["t"] <= duration]
    dur = max((s["t"] for s in samples), default=0)
    ramp, win = rss_windows(dur)
    med = lambda v: sorted(v)[len(v) // 2] if v else 0  # noqa: E731
    first_of = lambda key, t0: med([s.get(key, 0) for s in samples if t0 <= s["t"] <= t0 + win])  # noqa: E731
    last_of = lambda key: med([s.get(key, 0) for s in samples if s["t"] >= dur - win])  # noqa: E731
    pct = lambda a, b: round((b - a) / a * 100, 1) if a else None  # noqa: E731
    first, last, from_start = first_of("rss", ramp), last_of("rss"), first_of("rss", 0.0)
    # The same medians for each part of RSS: a step in "file" is code of the binary run
    # for the first time (a rare path), not memory the gateway holds.
    parts = {}
    for part in ("anon", "file", "thp"):
        a, b = first_of(part, ramp), last_of(part)
        parts[part] = {"median_first_window": a, "median_last_window": b, "growth_pct": pct(a, b),
                       "max": max((s.get(part, 0) for s in samples), default=0)}
    after = [s for s in samples if s["t"] >= ramp]
    slope = None
    if len(after) > 2:
        mt = sum(s["t"] for s in after) / len(after)
        mr = sum(s["rss"] for s in after) / len(after)
        den = sum((s["t"] - mt) ** 2 for s in after)
        slope = sum((s["t"] - mt) * (s["rss"] - mr) for s in after) / den * 60 / 2**20 if den else None
    return {"growth": (last - first) / first if first else None,
            "rss_window_s": round(win), "rss_ramp_s": ramp,
            "rss_median_first_window": first, "rss_median_last_window": last,
            "rss_growth_pct": pct(first, last),
            "rss_slope_mib_per_min": round(slope, 3) if slope is not None else None,
            "rss_median_first_window_from_0s": from_start, "rss_growth_pct_from_0s": pct(from_start, last),
            "rss_parts": parts}


def recheck(paths):
    """Prints the RSS check of saved runs (their `samples`) under today's rule, beside
    the growth each file recorded, the growth with the first window from 0 s (the rule
    until 2026-12-07), and the other checks the run failed, which the rule does not
    touch."""
    print("| run | verdict then | RSS growth then | RSS growth now (first window from) | from 0 s "
          "| RSS check now | other checks failed |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        d = json.loads(Path(path).read_text())
        samples = d.get("samples", [])
        other = ", ".join(k for k, ok in d.get("checks", {}).items()
                          if not ok and k != "rss_growth_within_10pct") or "none"
        if not samples:
            print(f"| {Path(path).name} | {d.get('verdict')} | no RSS samples in the file | | | | {other} |")
            continue
        rf = rss_figures(samples, d.get("minutes", 0) * 60 or None)
        print(f"| {Path(path).name} | {d.get('verdict')} | {d.get('figures', {}).get('rss_growth_pct')} % "
              f"| {rf['rss_growth_pct']} % ({rf['rss_ramp_s']:g} s) | {rf['rss_growth_pct_from_0s']} % "
              f"| {'pass' if rf['growth'] is not None and rf['growth'] <= RSS_GROWTH_MAX else 'FAIL'} | {other} |")

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--bin", default=str(ROOT / "target/release/portcullis"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warmup", type=float, default=120)
    ap.add_argument("--out", default=str(ROOT / "bench/soak-results.json"))
    ap.add_argument("--without", default="", help="comma-separated parts to leave out, to find which one "
                    "moves a figure: h2 (the HTTP/2 loads), tls (the loads over TLS and the TLS attacks), "
                    "ws (the WebSocket tunnels), hostile (the hostile clients)")
    ap.add_argument("--recheck", nargs="+", metavar="FILE",
                    help="print the RSS check of saved runs (their samples) under this rule, and stop")
    a = ap.parse_args()
    if a.recheck:
        recheck(a.recheck)
        return
    without = {p for p in a.without.split(",") if p}
    tools_check(["taskset", "openssl"])
    raise_nofile()
    pin_self(0)
    w = Path(tempfile.mkdtemp(prefix="pc-soak-"))
    binary, bininfo = copy_binary(a.bin, w)
    sk = Soak(w, binary, a.seed)
    doc = {"machine": machine(), "binary": bininfo, "minutes": a.minutes, "seed": a.seed, "without": sorted(without),
           # mimalloc's options from the environment, which the gateway inherits.
           "allocator_env": {k: v for k, v in os.environ.items() if k.startswith("MIMALLOC_")},
           "load": "; ".join(f"{label}: {c} connections" + (f", {r} req/s" if r else "")
                             for _, label, _, _, c, r, _, _ in LOADS),
           "settings": "see bench/soak.py docstring"}
    tls_port = None if "tls" in without else FRONT_TLS
    try:
        sk.start()
        pid = sk.pc.pid
        print(f"warm-up {a.warmup:.0f} s", flush=True)
        warm = make_loads(a.warmup, a.seed, without, measured=False)
        warm_hostile = Hostile("127.0.0.1", FRONT, WARM_HOSTILE_RID_BASE, seed=a.seed + 1002, tls_port=tls_port)
        if "hostile" not in without:
            warm_hostile.start()
        wres = join_loads(warm)
        warm_hostile.stop()
        base_fds, base_rss = sk.idle_figures()
        print("warm-up: " + ", ".join(f"{key} {r['requests']} requests, {r['failed']} failed" for key, r, _, _ in wres)
              + f"; baseline fds {base_fds}, RSS {base_rss / 2**20:.1f} MiB", flush=True)
        dur = a.minutes * 60
        sk.duration = dur
        loads = make_loads(dur, a.seed, without, measured=True)
        hostile = Hostile("127.0.0.1", FRONT, HOSTILE_RID_BASE, seed=a.seed + 3000, tls_port=tls_port)
        if "hostile" not in without:
            hostile.start()
        sk.t0 = loads[0][1].t0
        # Wall-clock start of the measured phase: lines bench/heapstat.py's build writes line up with it.
        doc["phase_started_unix"] = round(time.time() - (time.monotonic() - sk.t0), 2)
        sk.sampling = True
        threading.Thread(target=sk.sampler, daemon=True).start()
        print(f"load with chaos and hostile clients for {a.minutes:g} min", flush=True)
        sk.chaos(sk.t0 + dur)
        results = join_loads(loads)
        hostile.stop()
        sk.sampling = False
        end_alive = alive(pid) and sk.pc.poll() is None
        end_fds, end_rss = sk.idle_figures(baseline_fds=base_fds) if end_alive else (-1, 0)
        recs = read_access_log(w / "state/logs/access.log")
        doc["portcullis_events"] = portcullis_events(w / "state/events.jsonl")
        doc |= check(results, recs, sk, end_alive, base_fds, end_fds, base_rss, end_rss, wres, hostile)
        doc["hostile_warmup"] = warm_hostile.summary()
    finally:
        sk.stop()
        shutil.rmtree(w, ignore_errors=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    report(doc)
    print(f"\nwritten: {a.out}")


def portcullis_events(path):
    """The activity log (health transitions, ejections, instance events), as text lines."""
    try:
        items = [json.loads(line) for line in open(path) if line.strip()]
        return [f"{e.get('time', '')} {e.get('kind', '')} {e.get('subject', '')}: {e.get('message', '')}" for e in items]
    except Exception as e:
        return [f"events unavailable: {e!r}"]


def check(loads, recs, sk, end_alive, base_fds, end_fds, base_rss, end_rss, wres, hostile):
    """`loads` and `wres`: (key, summary, generator, first rid - 1) of each load (LOADS), in the
    measured phase and in the warm-up."""
    by_rid, hostile_by_rid = {}, {}
    dup = 0
    for r in recs:
        rid = rid_of(r)
        if rid is None or rid <= RID_BASE:
            continue
        if rid > HOSTILE_RID_BASE:
            hostile_by_rid[rid] = r
            continue
        if rid in by_rid:
            dup += 1
        by_rid[rid] = r
    measured = [r for r in recs if RID_BASE < (rid_of(r) or 0) <= HOSTILE_RID_BASE]
    failures = [f for _, res, _, _ in loads for f in res["failures"]]

    def event_at(t):
        for e in sk.events:
            if e["t"] - 1 <= t <= (e.get("end") or e["t"]) + 6:  # a request timeout after the end
                return e["event"]
        return "none"

    unexplained, explained = [], Counter()
    for f in failures:
        r = by_rid.get(f["rid"])
        ei = r["properties"].get("error_info", "") if r else None
        f["event"] = event_at(f["t"])
        if r is None or ei in ("", "ERRORINFO_NO_ERROR"):
            unexplained.append({"client": f, "record": brief(r) if r else None})
        else:
            explained[f"{f.get('http', '1.1')} {f['kind']} <- {r['properties'].get('httpStatus')} {ei}"] += 1
    # WebSocket tunnels cut after their 101 (their records say 101 whatever happened):
    # only at a fault of the servers the tunnel goes to, whose effect may come up to 15 s
    # after it ended (a rolling app restart, an echo that waited out a freeze), the
    # latest such fault that began before the cut; never a wrong echo.
    cuts = [c for _, res, _, _ in loads for c in res.get("cuts", [])]
    for c in cuts:
        kinds = TUNNEL_CUTTERS["app" if c["path"].startswith("/app/") else "pool"]
        near = [e for e in sk.events
                if e["event"] in kinds and e["t"] - 1 <= c["t"] <= (e.get("end") or e["t"]) + 15]
        c["event"] = max(near, key=lambda e: e["t"])["event"] if near else "none"
    bad_cuts = [c for c in cuts if c["kind"] == "echo-mismatch" or c["event"] == "none"]
    ok_rids = set().union(*(load.ok_rids or set() for _, _, load, _ in loads))
    hidden = [brief(r) for rid, r in by_rid.items()
              if rid in ok_rids and r["properties"].get("error_info") != "ERRORINFO_NO_ERROR"]
    missing = [rid for _, res, _, base in loads for rid in range(base + 1, base + res["requests"] + 1)
               if rid not in by_rid]
    hostile_problems = hostile.check_records(hostile_by_rid)
    hostile_summary = hostile.summary()
    rf = rss_figures(sk.samples, sk.duration)
    growth = rf["growth"]
    idle_growth = (end_rss - base_rss) / base_rss if base_rss else None
    checks = {
        "portcullis_running": end_alive,
        "every_failure_explained": not unexplained,
        "fds_back_to_baseline": end_alive and end_fds <= base_fds + FD_SLACK,
        "rss_growth_within_10pct": growth is not None and growth <= RSS_GROWTH_MAX,
        "hostile_clients_answered_as_expected": not hostile_summary["unexpected"] and not hostile_problems,
        "tunnels_cut_only_at_backend_faults": not bad_cuts,
    }
    fail_by_event = Counter(f"{f['event']}: {f.get('http', '1.1')} {f['kind']}" for f in failures)
    small = lambda res: {k: v for k, v in res.items() if k not in ("failures", "timeline")}  # noqa: E731
    return {
        "verdict": "PASS" if all(checks.values()) else "FAIL",
        "checks": checks,
        "figures": {"baseline_fds": base_fds, "end_fds": end_fds, "fd_slack": FD_SLACK,
                    **{k: v for k, v in rf.items() if k != "growth"},
                    "rss_idle_after_warmup": base_rss, "rss_idle_end": end_rss,
                    "rss_idle_growth_pct": round(idle_growth * 100, 1) if idle_growth is not None else None,
                    "rss_peak_during_run": max((s["rss"] for s in sk.samples), default=0),
                    "fds_peak_during_run": max((s["fds"] for s in sk.samples), default=0)},
        "warmup": {key: small(res) for key, res, _, _ in wres},
        **{key: small(res) for key, res, _, _ in loads},
        "hostile": hostile_summary | {"record_problems": hostile_problems[:50],
                                      "record_problem_count": len(hostile_problems)},
        "failures_by_event": dict(fail_by_event.most_common()),
        "failures_explained_by": dict(explained.most_common()),
        "unexplained_failures": unexplained[:50],
        "unexplained_count": len(unexplained),
        "tunnel_cuts_by_event": dict(Counter(f"{c['event']}: {c['kind']}" for c in cuts)),
        "tunnel_cuts_unexplained": bad_cuts[:50],
        "records_missing": len(missing), "records_missing_sample": missing[:20], "records_duplicated": dup,
        "error_records_for_client_successes": len(hidden), "error_records_for_client_successes_sample": hidden[:20],
        "access_log": summarize_access_log(measured, samples=10),
        "events": sk.events,
        "event_counts": dict(Counter(e["event"] for e in sk.events)),
        "samples": sk.samples,
        "failures": failures[:5000],
    }


def report(doc):
    m, f = doc["machine"], doc.get("figures", {})
    print(f"\nMachine: {m['nproc']} cores, {m['cpu']}, kernel {m['kernel']}, {m['time']}; binary {doc['binary']['git_head']}")
    print(f"\nSoak {doc['minutes']:g} min, seed {doc['seed']}: verdict **{doc.get('verdict')}**\n")
    print("| check | result | figures |")
    print("|---|---|---|")
    ch = doc.get("checks", {})
    mib = lambda v: f"{v / 2**20:.1f} MiB"
    print(f"| portcullis still running | {ch.get('portcullis_running')} | |")
    per_load = ", ".join(f"{label} {doc[key].get('failed')} failed of {doc[key].get('requests')}"
                         for key, label, *_ in LOADS if key in doc)
    print(f"| every failed request has a record with an error_info | {ch.get('every_failure_explained')} "
          f"| {per_load}; {doc.get('unexplained_count')} unexplained |")
    h = doc.get("hostile", {})
    print(f"| hostile clients answered as expected | {ch.get('hostile_clients_answered_as_expected')} "
          f"| {sum(h.get('attacks', {}).values())} attacks {h.get('attacks')}; unexpected answers "
          f"{h.get('unexpected')}; record problems {h.get('record_problem_count')} of {h.get('records_expected')} |")
    ws = doc.get("client_ws", {})
    print(f"| WebSocket tunnels cut only at backend faults, every echo right | "
          f"{ch.get('tunnels_cut_only_at_backend_faults')} | {ws.get('requests')} tunnels, {ws.get('messages')} "
          f"messages echoed; cut {doc.get('tunnel_cuts_by_event')}; {len(doc.get('tunnel_cuts_unexplained', []))} "
          f"unexplained |")
    print(f"| open fds back to baseline (+{f.get('fd_slack')}) | {ch.get('fds_back_to_baseline')} "
          f"| {f.get('baseline_fds')} -> {f.get('end_fds')} (peak {f.get('fds_peak_during_run')}) |")
    print(f"| RSS growth <= 10 % (median of the first {f.get('rss_window_s')} s after {f.get('rss_ramp_s', 0):g} s "
          f"vs the last {f.get('rss_window_s')} s) "
          f"| {ch.get('rss_growth_within_10pct')} | {mib(f.get('rss_median_first_window', 0))} -> "
          f"{mib(f.get('rss_median_last_window', 0))} ({f.get('rss_growth_pct')} %; slope "
          f"{f.get('rss_slope_mib_per_min')} MiB/min; peak {mib(f.get('rss_peak_during_run', 0))}; idle readings "
          f"{mib(f.get('rss_idle_after_warmup', 0))} -> {mib(f.get('rss_idle_end', 0))}, {f.get('rss_idle_growth_pct')} %; "
          f"first window from 0 s: {f.get('rss_growth_pct_from_0s')} %) |")
    for part, what in (("anon", "heap and stacks"), ("file", "mapped files: the binary's code"),
                       ("thp", "of anon, in transparent huge pages")):
        pp = f.get("rss_parts", {}).get(part)
        if pp:
            print(f"| (RSS part {part}: {what}; not a check) | | {mib(pp['median_first_window'])} -> "
                  f"{mib(pp['median_last_window'])} ({pp['growth_pct']} %; max {mib(pp.get('max', 0))}) |")
    print(f"\nEvents: {doc.get('event_counts')}")
    print("Client failures by kind: " + "; ".join(
        f"{label} {doc[key].get('by_kind')}" + (f" (GOAWAY retries {doc[key].get('goaway_retried')})"
                                                if proto == "h2" else "")
        for key, label, _, proto, *_ in LOADS if key in doc))
    print(f"Failures by event: {doc.get('failures_by_event')}")
    print(f"Failures explained by (client kind <- record): {doc.get('failures_explained_by')}")
    print(f"Access log (measured phase): errors {doc.get('access_log', {}).get('errors')}; "
          f"answered after a retry {doc.get('access_log', {}).get('answered_after_retry')}")
    print(f"Requests without a record: {doc.get('records_missing')}; duplicated records: {doc.get('records_duplicated')}; "
          f"error records for requests the client saw succeed: {doc.get('error_records_for_client_successes')}")


if __name__ == "__main__":
    main()
