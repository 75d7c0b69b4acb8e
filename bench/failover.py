"""Failover under load: client-visible failures of portcullis, nginx and HAProxy while a
backend dies, freezes, closes idle connections, is restarted, or the proxy reloads.

    python3 bench/failover.py [--duration S] [--bin PATH] [--scenarios a,b] [--proxies p,q]

Every (scenario, proxy) pair gets fresh processes on 127.0.0.1: three backends, the proxy
pinned to core 1 (`taskset -c 1`); backends and the load generator share core 0. The load
is bench/loadgen.py (exact counts: a request fails on a non-2xx status, a socket error, a
cut body or a 15 s client timeout). Settings of the proxies: see PROXY_SETTINGS below and
bench/DRAFT-benchmarks-reliability.md. Results: a markdown table on stdout and
bench/failover-results.json (per pair: counts by kind, every failure with its time, the
portcullis access-log records of failures, nginx/HAProxy error-log summaries).
"""
import argparse, json, os, random, shutil, signal, subprocess, sys, tempfile, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, TOKEN, Setup, start_checked, api, children, copy_binary, git_head, kill_and_reap, log_lines_summary,  # noqa: E402
                    machine, pc_cli, pin_self, raise_nofile, read_access_log, rid_of, signal_proc, summarize_access_log,
                    tools_check, wait_app_ready, wait_port, brief)
from loadgen import Load  # noqa: E402

# Ports below 15000: the e2e tests (tests/e2e/support.rs) take free ports in 15000-32000,
# and a test that grabs a port between two runs here would stand in for a backend.
FRONT = 14181            # the proxy under test listens here
CONSOLE = 14190          # portcullis console
BACKENDS = [14185, 14186, 14187]
TIMEOUT_S = 5            # request (response header) and connect timeout, all proxies
CONNS, RATE = 16, 800    # constant load: 16 keep-alive connections, 800 req/s in all
BURST_CONNS, BURST_SIZE = 32, 2      # idle-close: connections, requests per connection per burst
BURST_GAP_S = (0.98, 1.04)          # idle-close: burst start to burst start, seconds (uniform)
FREEZE_S = 8             # SIGSTOP length in the freeze scenario (> TIMEOUT_S on purpose)

SCENARIOS = {
    "kill": "kill -9 one of three backends at D/3; start it again at 2D/3",
    "freeze": f"SIGSTOP one of three backends at D/3 for {FREEZE_S} s, then SIGCONT",
    "idle-close": "backends (nginx, keepalive_timeout 1s) close idle keep-alive connections after 1 s; "
                  f"bursty load: {BURST_CONNS} connections send {BURST_SIZE} requests each back to back, bursts "
                  f"{BURST_GAP_S[0]}-{BURST_GAP_S[1]} s apart (start to start)",
    "app-restart": "rolling `portcullis app restart` of a hosted app (3 demo-app instances) at D/4, D/2 and 3D/4 "
                   "(portcullis only)",
    "rolling": "rolling restart of the three backends one by one from D/4 (SIGTERM, start again on the "
               "same port, 3 s apart): the app-restart emulated for every proxy",
    "reload": "config reload every 2 s from D/4 to 3D/4 (portcullis: SIGHUP and `portcullis reload` "
              "alternately; nginx: `nginx -s reload`; HAProxy: master-worker SIGUSR2)",
}
PROXIES = ["portcullis", "nginx", "haproxy"]

PROXY_SETTINGS = {
    "portcullis": f"request_timeout = {TIMEOUT_S}s (connect timeout = min(request_timeout, 10 s) = {TIMEOUT_S} s); "
                  "probe GET /health interval 1 s, timeout 1 s, unhealthy_threshold 2, healthy_threshold 2; "
                  "outlier_consecutive_errors = 1; retry_idempotent_on_reset = true; retry_idempotent_on_timeout = true "
                  "(as nginx's proxy_next_upstream timeout and HAProxy's retry-on response-timeout); passive ejection on "
                  "refused/reset (built in); round robin; idle upstream connections kept 4 s (built in)",
    "nginx": f"1 worker; upstream keepalive 32; server max_fails=1 fail_timeout=2s; proxy_connect_timeout, "
             f"proxy_send_timeout, proxy_read_timeout {TIMEOUT_S}s; proxy_next_upstream error timeout "
             "(the default; tries and timeout unlimited); round robin; no active checks (open-source nginx)",
    "haproxy": f"nbthread 1; balance roundrobin; timeout connect {TIMEOUT_S}s, timeout server {TIMEOUT_S}s; "
               "option httpchk GET /health, check inter 1s fall 2 rise 2, timeout check 1s; observe layer4 "
               "error-limit 1 on-error mark-down; retries 3; option redispatch 1; retry-on conn-failure "
               "empty-response junk-response response-timeout; http-reuse safe (the default); master-worker (-W)",
}


# ---- configs -----------------------------------------------------------------------------------

def portcullis_conf(w, binary, app=False, gen=0):
    pool = ('app = "web"' if app else
            "addresses = [" + ", ".join(f'"127.0.0.1:{p}"' for p in BACKENDS) + "]")
    apps = f"""
[[apps]]
name = "web"
command = ["taskset", "-c", "0", "{binary}", "demo-app"]
instances = 3
health_check_path = "/health"
stop_timeout = "5s"
""" if app else ""
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
[[backend_pools]]
name = "pool"
{pool}
[[backend_http_settings]]
name = "s"
request_timeout = {TIMEOUT_S}
probe = "p"
outlier_consecutive_errors = 1
retry_idempotent_on_reset = true
retry_idempotent_on_timeout = true
[[probes]]
name = "p"
path = "/health"
interval = 1
timeout = 1
unhealthy_threshold = 2
healthy_threshold = 2
[[request_routing_rules]]
name = "r"
listener = "web"
priority = 1
backend_pool = "pool"
backend_http_settings = "s"
{apps}"""


def nginx_conf(w, gen=0):
    servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in BACKENDS)
    return f"""# generation {gen}
worker_processes 1; daemon off; pid {w}/nginx.pid; error_log {w}/nginx.error.log warn;
events {{ worker_connections 4096; }}
http {{
  log_format failed '$time_iso8601 $status "$request" upstream=$upstream_addr upstream_status=$upstream_status rt=$request_time';
  map $status $failed {{ ~^2 0; default 1; }}
  access_log {w}/nginx.failed.log failed if=$failed;
  keepalive_requests 1000000; keepalive_timeout 75s;
  upstream b {{
{servers}
    keepalive 32;
  }}
  server {{ listen 127.0.0.1:{FRONT} backlog=4096;
    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_connect_timeout {TIMEOUT_S}s; proxy_send_timeout {TIMEOUT_S}s; proxy_read_timeout {TIMEOUT_S}s;
      proxy_next_upstream error timeout; }} }} }}
"""


def haproxy_conf(w, gen=0):
    servers = "\n".join(f"  server s{i + 1} 127.0.0.1:{p}" for i, p in enumerate(BACKENDS))
    return f"""# generation {gen}
global
  nbthread 1
  maxconn 4096
  stats socket {w}/haproxy.sock mode 600 level admin expose-fd listeners
  log stderr format raw local0 info
defaults
  mode http
  log global
  option httplog
  option dontlog-normal
  option http-keep-alive
  timeout connect {TIMEOUT_S}s
  timeout server {TIMEOUT_S}s
  timeout client 60s
  timeout http-keep-alive 60s
  timeout check 1s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response junk-response response-timeout
frontend f
  bind 127.0.0.1:{FRONT}
  default_backend b
backend b
  balance roundrobin
  option httpchk GET /health
  default-server check inter 1s fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down
{servers}
"""


def idle_close_backend_conf(w):
    listens = " ".join(f"listen 127.0.0.1:{p};" for p in BACKENDS)
    return f"""worker_processes 1; daemon off; pid {w}/backend.pid; error_log {w}/backend.error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 1s;
  server {{ {listens}
    location = /health {{ return 200 "OK"; }}
    location / {{ return 200 "hello\\n"; }} }} }}
"""


# ---- one (scenario, proxy) run --------------------------------------------------------------------

class Bed:
    def __init__(self, work, binary, proxy, scenario):
        self.w, self.bin, self.proxy, self.scenario = Path(work), binary, proxy, scenario
        self.s = Setup(self.w)
        self.gen = 0
        self.events = []
        self.t0 = None

    def note(self, what):
        t = round(time.monotonic() - self.t0, 2) if self.t0 else None
        self.events.append({"t": t, "event": what})

    # backends
    def start_backend(self, i):
        # (also used to restart a backend mid-run: a failure there is noted, not retried)
        start_checked(self.s, f"b{i}", [str(self.bin), "demo-app", "--port", str(BACKENDS[i])], pin=0, port=BACKENDS[i])

    def start(self):
        w = self.w
        if self.scenario == "idle-close":
            (w / "backend.conf").write_text(idle_close_backend_conf(w))
            start_checked(self.s, "backend", ["nginx", "-c", str(w / "backend.conf")], pin=0, port=BACKENDS[-1])
        elif self.scenario != "app-restart":
            for i in range(3):
                self.start_backend(i)
        if self.proxy == "portcullis":
            (w / "pc.toml").write_text(portcullis_conf(w, self.bin, app=self.scenario == "app-restart"))
            start_checked(self.s, "proxy", [str(self.bin), "run", "-c", str(w / "pc.toml")], pin=1, port=FRONT)
            if self.scenario == "app-restart":
                wait_app_ready(f"127.0.0.1:{CONSOLE}", "web", 3)
        elif self.proxy == "nginx":
            (w / "nginx.conf").write_text(nginx_conf(w))
            start_checked(self.s, "proxy", ["nginx", "-c", str(w / "nginx.conf")], pin=1, port=FRONT)
        else:
            (w / "haproxy.cfg").write_text(haproxy_conf(w))
            start_checked(self.s, "proxy", ["haproxy", "-W", "-f", str(w / "haproxy.cfg")], pin=1, port=FRONT)
        time.sleep(2.5)  # first health checks

    def stop(self):
        for p in self.s.procs.values():
            signal_proc(p, signal.SIGCONT)
        self.s.stop()

    # faults
    def reload(self):
        self.gen += 1
        w = self.w
        if self.proxy == "portcullis":
            (w / "pc.toml").write_text(portcullis_conf(w, self.bin, app=False, gen=self.gen))
            if self.gen % 2:
                signal_proc(self.s.procs["proxy"], signal.SIGHUP)
                self.note(f"reload {self.gen}: SIGHUP")
            else:
                rc, out = pc_cli(self.bin, f"127.0.0.1:{CONSOLE}", "reload")
                self.note(f"reload {self.gen}: portcullis reload -> exit {rc}: {out[:120]}")
        elif self.proxy == "nginx":
            (w / "nginx.conf").write_text(nginx_conf(w, gen=self.gen))
            r = subprocess.run(["nginx", "-c", str(w / "nginx.conf"), "-s", "reload"], capture_output=True, text=True)
            self.note(f"reload {self.gen}: nginx -s reload -> exit {r.returncode} {r.stderr.strip()[:120]}")
        else:
            (w / "haproxy.cfg").write_text(haproxy_conf(w, gen=self.gen))
            signal_proc(self.s.procs["proxy"], signal.SIGUSR2)
            self.note(f"reload {self.gen}: SIGUSR2 to the HAProxy master")

    def schedule(self, d):
        """(time offset, action) list for this scenario."""
        b = self.s.procs
        sc = self.scenario
        if sc == "kill":
            return [(d / 3, lambda: (b["b1"].send_signal(signal.SIGKILL), b["b1"].wait(), self.note("kill -9 backend 2"))),
                    (2 * d / 3, lambda: (self.start_backend(1), self.note("backend 2 started again")))]
        if sc == "freeze":
            return [(d / 3, lambda: (b["b1"].send_signal(signal.SIGSTOP), self.note("SIGSTOP backend 2"))),
                    (d / 3 + FREEZE_S, lambda: (b["b1"].send_signal(signal.SIGCONT), self.note("SIGCONT backend 2")))]
        if sc == "app-restart":
            def restart():
                t = time.monotonic()
                rc, out = pc_cli(self.bin, f"127.0.0.1:{CONSOLE}", "app", "restart", "web")
                self.note(f"portcullis app restart web -> exit {rc} after {time.monotonic() - t:.1f} s: "
                          f"{out.splitlines()[0][:100] if out else ''}")
            return [(d / 4, restart), (d / 2, restart), (3 * d / 4, restart)]
        if sc == "rolling":
            def roll():
                for i in range(3):
                    p = b[f"b{i}"]
                    was = "running" if p.poll() is None else f"ALREADY EXITED with {p.returncode}"
                    kill_and_reap(p, signal.SIGTERM)
                    self.note(f"backend {i + 1} stopped (SIGTERM; it was {was})")
                    self.start_backend(i)
                    self.note(f"backend {i + 1} started again")
                    time.sleep(3)
            return [(d / 4, roll)]
        if sc == "reload":
            n = int(d / 2 / 2)
            return [(d / 4 + 2 * k, self.reload) for k in range(n)]
        return []

    def run(self, d, seed):
        if self.scenario == "idle-close":
            rng = random.Random(seed)
            bursts, t = [], 0.5
            while t < d:
                bursts.append(t)
                t += rng.uniform(*BURST_GAP_S)
            load = Load("127.0.0.1", FRONT, BURST_CONNS, d, bursts=bursts, burst_size=BURST_SIZE, timeout=15, seed=seed)
        else:
            load = Load("127.0.0.1", FRONT, CONNS, d, rate=RATE, timeout=15, seed=seed)
        gone = {n: p.returncode for n, p in self.s.procs.items() if p.poll() is not None}
        if gone:
            raise RuntimeError(f"exited before the load started: {gone}")
        load.start()
        self.t0 = load.t0
        for at, action in self.schedule(d):
            delay = load.t0 + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                action()
            except Exception as e:  # a failed injection is reported, not fatal
                self.note(f"injection failed: {e!r}")
        res = load.join()
        res["events"] = self.events
        time.sleep(0.5)
        res["logs"] = self.proxy_logs(res)
        return res

    def proxy_logs(self, res):
        w = self.w
        if self.proxy == "portcullis":
            recs = read_access_log(w / "state/logs/access.log")
            out = summarize_access_log(recs)
            by_rid = {rid_of(r): r for r in recs}
            matched = []
            for f in res["failures"][:40]:
                r = by_rid.get(f["rid"])
                matched.append({"rid": f["rid"], "client": f["kind"], "record": brief(r) if r else None})
            out["failed_requests_records"] = matched
            out["events"] = [e for e in self.portcullis_events()][-30:]
            return out
        if self.proxy == "nginx":
            return {"error_log": log_lines_summary(w / "nginx.error.log"),
                    "failed_access_log": log_lines_summary(w / "nginx.failed.log")}
        return {"log": log_lines_summary(w / "proxy.err")}

    def portcullis_events(self):
        try:
            _, ev = api(f"127.0.0.1:{CONSOLE}", "GET", "/api/events")
            items = ev if isinstance(ev, list) else ev.get("events", [])
            return [f"{e.get('time', '')} {e.get('kind', '')} {e.get('subject', '')}: {e.get('message', '')}" for e in items]
        except Exception as e:
            return [f"events unavailable: {e!r}"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=30, help="seconds of load per (scenario, proxy); default 30")
    ap.add_argument("--bin", default=str(ROOT / "target/release/portcullis"))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "bench/failover-results.json"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    a = ap.parse_args()
    tools_check(["nginx", "haproxy", "taskset"])
    raise_nofile()
    pin_self(0)
    top = Path(tempfile.mkdtemp(prefix="pc-failover-"))
    binary, bininfo = copy_binary(a.bin, top)
    results = {}
    try:
        for sc in a.scenarios.split(","):
            for px in a.proxies.split(","):
                key = f"{sc}/{px}"
                if sc == "app-restart" and px != "portcullis":
                    results[key] = {"na": "no app host; see the `rolling` scenario for the emulation"}
                    continue
                w = top / sc / px
                w.mkdir(parents=True)
                shutil.copy2(binary, w / "portcullis")
                for attempt in (1, 2):
                    bed = Bed(w / f"try{attempt}", w / "portcullis", px, sc)
                    bed.w.mkdir()
                    try:
                        bed.start()
                        res = bed.run(a.duration, a.seed)
                        break
                    except RuntimeError as e:  # a process did not start; once more
                        print(f"  {key}: {e}; {'retrying' if attempt == 1 else 'giving up'}", flush=True)
                        res = {"error": str(e)}
                    finally:
                        bed.stop()
                results[key] = res
                if "error" in res:
                    continue
                print(f"{sc:12} {px:10} requests={res['requests']:6} failed={res['failed']:4} {res['by_kind']} "
                      f"p99={res['p99_ms']} ms max={res['max_ms']} ms stale-replaced={res['stale_keepalive_replaced']}",
                      flush=True)
    finally:
        if a.keep:
            print(f"work directory kept: {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
    doc = {"machine": machine(), "binary": bininfo, "duration_s": a.duration, "seed": a.seed,
           "load": {"constant": f"{CONNS} keep-alive connections, {RATE} req/s in all, GET /?rid=N",
                    "bursty": SCENARIOS["idle-close"],
                    "client_timeout_s": 15},
           "timeout_s": TIMEOUT_S, "freeze_s": FREEZE_S, "scenarios": SCENARIOS, "settings": PROXY_SETTINGS,
           "results": results}
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print_table(doc, a.scenarios.split(","), a.proxies.split(","))
    print(f"\nwritten: {a.out}")


def kinds(r):
    return ", ".join(f"{k} {v}" for k, v in sorted(r["by_kind"].items())) or "-"


def print_table(doc, scenarios, proxies):
    m = doc["machine"]
    print(f"\nMachine: {m['nproc']} cores, {m['cpu']}, kernel {m['kernel']}, {m['time']}; "
          f"binary {doc['binary']['git_head']} ({doc['binary']['mtime']}); {doc['duration_s']:.0f} s per run\n")

    def failures(r):
        if "na" in r:
            return "n/a"
        if "error" in r:
            return "not run (a process did not start)"
        return f"**{r['failed']}** / {r['requests']}" + (f" ({kinds(r)})" if r["failed"] else "")

    def latency(r):
        if "na" in r:
            return "n/a"
        if "error" in r:
            return "-"
        return f"{r['p99_ms']} / {r['max_ms']}" + (f" (failed: {r['max_failed_ms']})" if r["failed"] else "")

    table(doc, scenarios, proxies, failures)
    print("\nLatency of the successful requests, p99 / max, and the longest failed request, in ms:\n")
    table(doc, scenarios, proxies, latency)


def table(doc, scenarios, proxies, cell):
    """One markdown table: a row per scenario, a column per proxy, `cell(result)` in each."""
    print("| scenario | " + " | ".join(proxies) + " |")
    print("|---|" + "---|" * len(proxies))
    for sc in scenarios:
        cells = []
        for px in proxies:
            r = doc["results"].get(f"{sc}/{px}")
            cells.append("" if r is None else cell(r))
        print(f"| {sc} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
