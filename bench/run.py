"""Runs the side-by-side benchmark (see docs/benchmarks.md).

Every proxy runs pinned to core 1 (`taskset -c 1`), the load generator to core 0;
the backend is one nginx worker serving a fixed 6-byte body and a 1 MiB file.
Proxies: portcullis (release build, access log on), nginx (1 worker, upstream
keep-alive, access log on, buffered), HAProxy (nbthread 1, its standard HTTP
log on, `option httplog`, to stderr, a file here; and "haproxy-nolog", the same
without a log, beside "portcullis-nolog"), and
"direct" (the backend itself, the ceiling). Every proxy sends its backend and its
client the fields portcullis does (`NGINX_FORWARDING`, `HAPROXY_FORWARDING`;
bench/fields.py shows them), but for "nginx-bare" and "haproxy-bare", which
forward what the runs before 2026-12-07 (the twenty-third session) had them
forward: only `X-Forwarded-For`. Order
alternates between rounds; the best of the rounds is reported, and after the
table each pair's ratio in every round with its median (`print_round_ratios`).
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target/release/portcullis"
# The profile-guided build (bench/pgo.py), run beside BIN with --pgo.
PGO_BIN = ROOT / "target/pgo/use/release/portcullis"
PORTS = {"backend": 18080, "portcullis": 18081, "nginx": 18082, "haproxy": 18083, "console": 18090,
         "portcullis_nometrics": 18084, "console_nometrics": 18091,
         "portcullis_nolog": 18085, "console_nolog": 18092, "nginx_azurelog": 18086,
         "portcullis_pgo": 18087, "console_pgo": 18093, "haproxy_nolog": 18088,
         "nginx_bare": 18089, "haproxy_bare": 18094,
         "portcullis_tls": 18441, "nginx_tls": 18442, "haproxy_tls": 18443,
         "portcullis_nometrics_tls": 18444, "portcullis_nolog_tls": 18445, "portcullis_pgo_tls": 18446}


def wait_port(port, timeout=15):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def cpu_times(pid):
    """User and system CPU seconds of process `pid`, all its threads
    (`/proc/PID/stat` utime and stime)."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(f[11]) / tick, int(f[12]) / tick


def peak_rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def children(pid):
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


class Setup:
    def __init__(self, work):
        self.work = Path(work)
        self.procs = {}

    def start(self, name, argv, pin=None, port=None):
        if pin is not None:
            argv = ["taskset", "-c", str(pin)] + argv
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(self.work / f"{name}.err", "w"),
                             cwd=self.work, start_new_session=True)
        self.procs[name] = p
        if port:
            wait_port(port)
        return p

    def stop(self):
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    def worker_pid(self, name):
        """The process doing the work: nginx's worker, else the process itself."""
        p = self.procs[name]
        kids = children(p.pid)
        return kids[0] if name.startswith("nginx") and kids else p.pid


def backend_setup(prefix):
    """A new work folder (run.py's configs in it, readable by nginx's workers, who run
    as nobody) and a Setup with the backend started in it, pinned to core 0. The caller
    stops the Setup and removes the folder; if the backend does not start, both are
    done here before the error goes on."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(work, 0o755)
    write_configs(work)
    s = Setup(work)
    try:
        s.start("backend", ["nginx", "-c", str(work / "backend.conf")], pin=0, port=PORTS["backend"])
    except BaseException:
        s.stop()
        shutil.rmtree(work, ignore_errors=True)
        raise
    return work, s


# What every proxy adds to a request and to its answer, so that each does the same
# work (issue 6's "equivalent settings"; since 2026-12-07, the twenty-third
# session). portcullis sends the backend `X-Forwarded-For` (the client's list and
# the client), `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Forwarded-Port`,
# `X-Original-Host` and `x-transaction-id`, a client's own fields of these names
# replaced (product spec section 4, docs/behaviour.md section 1), and gives the
# client the same `x-transaction-id` on every answer, a backend's own replaced
# (docs/access-log.md `transactionId`, proxy.rs `add_txid`): nginx's `always` and
# HAProxy's `http-after-response` cover their own error pages too. Until then the nginx
# proxies sent only `X-Forwarded-For`, HAProxy only its `option forwardfor`, and
# neither gave the client an id; and nginx sent its upstream's name as `Host`
# (its default, `$proxy_host`) where portcullis and HAProxy pass the client's.
# nginx's `$request_id` is 32 hex characters, as portcullis's transaction id;
# HAProxy's `uuid` is a version 4 UUID (36 characters with its dashes).
NGINX_FORWARDING = """
      proxy_set_header Host $http_host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host; proxy_set_header X-Forwarded-Port $server_port;
      proxy_set_header X-Original-Host $http_host; proxy_set_header x-transaction-id $request_id;
      proxy_hide_header x-transaction-id; add_header x-transaction-id $request_id always;"""
HAPROXY_FORWARDING = """
  unique-id-format %[uuid]
  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header X-Original-Host %[req.hdr(host)]
  http-request set-header x-transaction-id %[unique-id]
  http-after-response set-header x-transaction-id %[unique-id]"""


def haproxy_config(w, port, log, tls=None, forwarding=True):
    """HAProxy (1 thread, keep-alive, `http-reuse always`) on `port` (HTTP/1.1),
    `port`+100 (HTTP/2 with prior knowledge) and, with `tls`, TLS on that port;
    with `log`, its standard HTTP log (`option httplog`) to stderr. Every bind has
    `defer-accept`, as portcullis's listeners defer accepts (and the nginx proxies
    have `deferred`): equivalent settings. With `forwarding` (the default) it sends
    the fields portcullis sends (`HAPROXY_FORWARDING`); without, only `option
    forwardfor`'s, as the runs before the twenty-third session's."""
    log_global = "\n  log stderr format raw local0 info" if log else ""
    log_defaults = "\n  log global\n  option httplog" if log else ""
    tls_bind = f"\n  bind 127.0.0.1:{tls} ssl crt {w}/both.pem alpn h2,http/1.1 defer-accept" if tls else ""
    return f"""global
  nbthread 1
  maxconn 9000{log_global}
defaults
  mode http{log_defaults}
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend f
  bind 127.0.0.1:{port} defer-accept
  bind 127.0.0.1:{port+100} proto h2 defer-accept{tls_bind}
  option forwardfor{HAPROXY_FORWARDING if forwarding else ""}
  default_backend b
backend b
  server s1 127.0.0.1:{PORTS['backend']}
"""


def make_certificate(w):
    """A new self-signed ECDSA P-256 certificate for localhost in `w`: cert.pem and
    key.pem, and both.pem (the two in one file, as HAProxy's `crt` takes them)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=localhost", "-keyout", str(w / "key.pem"), "-out", str(w / "cert.pem")],
                   check=True, capture_output=True)
    (w / "both.pem").write_text((w / "cert.pem").read_text() + (w / "key.pem").read_text())


def write_configs(w):
    (w / "www").mkdir()
    (w / "www/1m").write_bytes(b"x" * 1048576)
    make_certificate(w)
    common = f"""worker_processes 1; daemon off; pid {w}/%s.pid; error_log {w}/%s.error.log warn;
events {{ worker_connections 20000; }}
"""
    (w / "backend.conf").write_text(common % ("backend", "backend") + f"""
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 75s;
  server {{ listen 127.0.0.1:{PORTS['backend']} reuseport backlog=4096;
    location = / {{ return 200 "hello\\n"; }}
    location = /1m {{ root {w}/www; }} }} }}
""")
    # `ssl_protocols TLSv1.2 TLSv1.3`: nginx 1.22 speaks TLS 1.3 only when asked (its
    # default is TLSv1 to TLSv1.2 until 1.23.4). Until 2026-12-06 (the sixteenth
    # session) it was not asked, and the tls scenario's nginx ran TLS 1.2.
    (w / "nginx.conf").write_text(common % ("nginx", "nginx") + f"""
http {{ access_log {w}/nginx.access.log combined buffer=64k flush=1s; keepalive_requests 1000000;
  upstream b {{ server 127.0.0.1:{PORTS['backend']}; keepalive 128; }}
  server {{ listen 127.0.0.1:{PORTS['nginx']} backlog=4096 deferred; listen 127.0.0.1:{PORTS['nginx']+100} http2 deferred;
    listen 127.0.0.1:{PORTS['nginx_tls']} ssl http2 deferred; ssl_certificate {w}/cert.pem; ssl_certificate_key {w}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection "";{NGINX_FORWARDING}
      proxy_buffering on; }} }} }}
""")
    # The same nginx forwarding what the runs before the twenty-third session's had it
    # forward: only `X-Forwarded-For` to the backend (and its upstream's name as
    # `Host`), nothing added to the answer. ka64 and h2, so one run shows what the
    # fields cost.
    (w / "nginx-bare.conf").write_text(common % ("nginx-bare", "nginx-bare") + f"""
http {{ access_log {w}/nginx-bare.access.log combined buffer=64k flush=1s; keepalive_requests 1000000;
  upstream b {{ server 127.0.0.1:{PORTS['backend']}; keepalive 128; }}
  server {{ listen 127.0.0.1:{PORTS['nginx_bare']} backlog=4096 deferred; listen 127.0.0.1:{PORTS['nginx_bare']+100} http2 deferred;
    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_buffering on; }} }} }}
""")
    # nginx writing the record portcullis writes (the Azure v2 shape, same fields and
    # about the same bytes per line) instead of its ~75-byte combined line: what the
    # same log costs nginx. Values nginx has no variable for are written as constants
    # of the same length. ka64 only.
    azure = ('{"timeStamp":"$time_iso8601","listenerName":"plain","ruleName":"r","backendPoolName":"pool",'
             '"backendSettingName":"s","operationName":"ApplicationGatewayAccess","category":"ApplicationGatewayAccessLog",'
             '"properties":{"instanceId":"$hostname","clientIP":"$remote_addr","clientPort":$remote_port,'
             '"httpMethod":"$request_method","originalRequestUriWithArgs":"$request_uri","requestUri":"$uri",'
             '"requestQuery":"$args","userAgent":"$http_user_agent","httpStatus":$status,"httpVersion":"$server_protocol",'
             '"receivedBytes":$request_length,"sentBytes":$bytes_sent,"clientResponseTime":0.0,"timeTaken":$request_time,'
             '"transactionId":"$request_id","sslEnabled":"off","sslCipher":"","sslProtocol":"",'
             '"serverRouted":"$upstream_addr","serverStatus":"$upstream_status",'
             '"serverResponseLatency":"$upstream_response_time","upstreamSourcePort":"$connection",'
             '"originalHost":"$http_host","host":"$proxy_host","error_info":"ERRORINFO_NO_ERROR",'
             '"contentType":"$sent_http_content_type","serverConnectTime":"$upstream_connect_time",'
             '"serverHeaderTime":"$upstream_header_time","attempts":[{"server":"$upstream_addr",'
             '"error_info":"ERRORINFO_NO_ERROR","serverStatus":"$upstream_status"}],"connectionReused":true}}')
    (w / "nginx-azurelog.conf").write_text(common % ("nginx-azurelog", "nginx-azurelog") + f"""
http {{ log_format azure escape=json '{azure}';
  access_log {w}/nginx-azurelog.access.log azure buffer=64k flush=1s; keepalive_requests 1000000;
  upstream b {{ server 127.0.0.1:{PORTS['backend']}; keepalive 128; }}
  server {{ listen 127.0.0.1:{PORTS['nginx_azurelog']} backlog=4096 deferred;
    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection "";{NGINX_FORWARDING}
      proxy_buffering on; }} }} }}
""")
    # HAProxy logging every request, as portcullis and nginx do: its standard HTTP
    # log line (`option httplog`, ~150 bytes), written to stderr (a file here) one
    # write per line, as HAProxy logs in a container. Every scenario.
    (w / "haproxy.cfg").write_text(haproxy_config(w, PORTS["haproxy"], log=True, tls=PORTS["haproxy_tls"]))
    # The same HAProxy without a log, beside portcullis-nolog. ka64 and h2 only.
    (w / "haproxy-nolog.cfg").write_text(haproxy_config(w, PORTS["haproxy_nolog"], log=False))
    # HAProxy with its log, forwarding what the runs before the twenty-third session's
    # had it forward (`option forwardfor` alone), beside nginx-bare. ka64 and h2.
    (w / "haproxy-bare.cfg").write_text(haproxy_config(w, PORTS["haproxy_bare"], log=True, forwarding=False))
    (w / "portcullis.toml").write_text(f"""
[gateway]
state_dir = "{w}/state"
[console]
listen = "127.0.0.1:{PORTS['console']}"
token = "bench"
[[listeners]]
name = "plain"
listen = "127.0.0.1:{PORTS['portcullis']}"
[[listeners]]
name = "tls"
listen = "127.0.0.1:{PORTS['portcullis_tls']}"
protocol = "https"
tls = {{ certificate = "{w}/cert.pem", key = "{w}/key.pem" }}
[[backend_pools]]
name = "pool"
addresses = ["127.0.0.1:{PORTS['backend']}"]
[[backend_http_settings]]
name = "s"
[[request_routing_rules]]
name = "r"
listener = "plain"
priority = 1
backend_pool = "pool"
backend_http_settings = "s"
[[request_routing_rules]]
name = "r-tls"
listener = "tls"
priority = 2
backend_pool = "pool"
backend_http_settings = "s"
""")


def write_variant_config(w, name, extra_gateway=""):
    """The same portcullis config on other ports (A/B variants: no metric
    recording, no access log), written to portcullis-NAME.toml."""
    key = name.replace("-", "_")
    text = (w / "portcullis.toml").read_text()
    text = text.replace(f"127.0.0.1:{PORTS['portcullis']}\"", f"127.0.0.1:{PORTS['portcullis_' + key]}\"")
    text = text.replace(f"127.0.0.1:{PORTS['console']}\"", f"127.0.0.1:{PORTS['console_' + key]}\"")
    text = text.replace(f"127.0.0.1:{PORTS['portcullis_tls']}\"", f"127.0.0.1:{PORTS['portcullis_' + key + '_tls']}\"")
    text = text.replace(f'state_dir = "{w}/state"', f'state_dir = "{w}/state-{name}"\n{extra_gateway}')
    (w / f"portcullis-{name}.toml").write_text(text)


def start_proxy(s, work, name, pin=None, binary=BIN):
    """Starts proxy `name` of the harness in Setup `s` from its config in `work`
    (write_configs, write_variant_config: NAME.conf for nginx, NAME.cfg for HAProxy,
    NAME.toml for portcullis, run with `binary`) and waits for its port
    (`PORTS[NAME]`, dashes as underscores)."""
    if name.startswith("nginx"):
        argv = ["nginx", "-c", str(work / f"{name}.conf")]
    elif name.startswith("haproxy"):
        argv = ["haproxy", "-f", str(work / f"{name}.cfg")]
    else:
        argv = [str(binary), "run", "-c", str(work / f"{name}.toml")]
    return s.start(name, argv, pin=pin, port=PORTS[name.replace("-", "_")])


def wrk(url, conns, secs, extra=()):
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", *extra, url],
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for q in ("50%", "99%"):
        m = re.search(rf"\s{re.escape(q)}\s+([\d.]+)(us|ms|s)", out)
        if m:
            v = float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
            lat[q] = v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50_ms": lat.get("50%"), "p99_ms": lat.get("99%"), "requests": total,
            "non2xx": int(errors.group(1)) if errors else 0, "socket_errors": sock.group(1) if sock else ""}


def h2load(url, secs):
    """h2load's run: req/s, and p50 and p99 from its per-request log (`--log-file`:
    start, status, microseconds to the end of the answer; failed streams, status -1,
    are left out of the percentiles and counted as errors)."""
    with tempfile.NamedTemporaryFile(prefix="pc-h2load-", suffix=".log") as log:
        out = subprocess.run(["taskset", "-c", "0", "h2load", "-c16", "-m10", "-D", str(secs),
                              f"--log-file={log.name}", url],
                             capture_output=True, text=True).stdout
        times = sorted(int(cols[2]) for cols in (line.split("\t") for line in open(log.name))
                       if len(cols) >= 3 and cols[1] != "-1")
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    pct = lambda q: round(times[min(len(times) - 1, int(len(times) * q))] / 1000, 3) if times else None
    return {"rps": float(m.group(1)) if m else 0.0, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "requests": int(done.group(1)) if done else 0,
            "non2xx": (int(done.group(1)) - int(done.group(2))) if done else 0, "socket_errors": ""}


# The fields a browser sends with a page request (Chrome's, with a session cookie and a
# referer): about 600 bytes of head where wrk's own request is about 40.
BROWSER_FIELDS = tuple(a for f in (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Accept-Language: en-US,en;q=0.9",
    "Accept-Encoding: gzip, deflate, br",
    "Cookie: session=8f3a9c2e1b7d4f6a; theme=dark; _ga=GA1.2.1234567890.1700000000",
    "Referer: https://example.com/products/list?page=2",
    "Sec-Fetch-Dest: document",
    "Sec-Fetch-Mode: navigate",
    "Sec-Fetch-Site: same-origin",
    "Upgrade-Insecure-Requests: 1",
    "Cache-Control: max-age=0",
) for a in ("-H", f))

SCENARIOS = {
    "ka64": ("keep-alive, 6-byte body, 64 connections", lambda base, s: wrk(base["http"] + "/", 64, s)),
    "browser": ("as ka64, with a browser's request fields (11 more, ~600 bytes of head)",
                lambda base, s: wrk(base["http"] + "/", 64, s, BROWSER_FIELDS)),
    "ka1": ("keep-alive, 6-byte body, 1 connection (latency)", lambda base, s: wrk(base["http"] + "/", 1, s)),
    "ka4": ("keep-alive, 6-byte body, 4 connections (light load)", lambda base, s: wrk(base["http"] + "/", 4, s)),
    "1mib": ("1 MiB response, 16 connections", lambda base, s: wrk(base["http"] + "/1m", 16, s)),
    "close": ("new connection per request, 16 connections",
              lambda base, s: wrk(base["http"] + "/", 16, s, ("-H", "Connection: close"))),
    "tls": ("TLS termination, keep-alive, 64 connections", lambda base, s: wrk(base["https"] + "/", 64, s)),
    # wrk's OpenSSL offers the last connection's session ticket, so most handshakes
    # are resumed ones (TLS 1.3 PSK with X25519: no certificate, no signature).
    "tlsnew": ("TLS termination, a new connection (a TLS 1.3 handshake) per request, 16 connections",
               lambda base, s: wrk(base["https"] + "/", 16, s, ("-H", "Connection: close"))),
    "h2": ("HTTP/2 (h2c), 16 connections x 10 streams", lambda base, s: h2load(base["h2"] + "/", s)),
}

TARGETS = {
    "portcullis": {"http": f"http://127.0.0.1:{PORTS['portcullis']}", "https": f"https://127.0.0.1:{PORTS['portcullis_tls']}",
                   "h2": f"http://127.0.0.1:{PORTS['portcullis']}"},
    "nginx": {"http": f"http://127.0.0.1:{PORTS['nginx']}", "https": f"https://127.0.0.1:{PORTS['nginx_tls']}",
              "h2": f"http://127.0.0.1:{PORTS['nginx']+100}"},
    "haproxy": {"http": f"http://127.0.0.1:{PORTS['haproxy']}", "https": f"https://127.0.0.1:{PORTS['haproxy_tls']}",
                "h2": f"http://127.0.0.1:{PORTS['haproxy']+100}"},
    "direct": {"http": f"http://127.0.0.1:{PORTS['backend']}", "https": None, "h2": None},
    # The same source built with profile-guided optimization (bench/pgo.py), every
    # scenario; only with --pgo.
    "portcullis-pgo": {"http": f"http://127.0.0.1:{PORTS['portcullis_pgo']}",
                       "https": f"https://127.0.0.1:{PORTS['portcullis_pgo_tls']}",
                       "h2": f"http://127.0.0.1:{PORTS['portcullis_pgo']}"},
    # The same portcullis with metric recording off (PORTCULLIS_BENCH_NO_METRICS=1):
    # the difference to "portcullis" is what recording costs. ka64 only.
    "portcullis-nometrics": {"http": f"http://127.0.0.1:{PORTS['portcullis_nometrics']}", "https": None, "h2": None,
                             "only": ("ka64",)},
    # The same portcullis with access_log = "off" (nginx's combined line is ~75 bytes,
    # the Azure v2 record ~930): shows what the richer log costs. ka64 and h2, beside
    # haproxy-nolog, and ka4, whose p99 is where the log's writes show.
    "portcullis-nolog": {"http": f"http://127.0.0.1:{PORTS['portcullis_nolog']}", "https": None,
                         "h2": f"http://127.0.0.1:{PORTS['portcullis_nolog']}", "only": ("ka64", "ka4", "h2")},
    # HAProxy without a log (see write_configs), beside portcullis-nolog. ka64 and h2.
    "haproxy-nolog": {"http": f"http://127.0.0.1:{PORTS['haproxy_nolog']}", "https": None,
                      "h2": f"http://127.0.0.1:{PORTS['haproxy_nolog']+100}", "only": ("ka64", "h2")},
    # nginx writing the portcullis record (see write_configs). ka64, and ka4 for its p99.
    "nginx-azurelog": {"http": f"http://127.0.0.1:{PORTS['nginx_azurelog']}", "https": None, "h2": None,
                       "only": ("ka64", "ka4")},
    # nginx and HAProxy without the fields portcullis adds (see write_configs), as
    # the runs before the twenty-third session's had them. ka64 and h2.
    "nginx-bare": {"http": f"http://127.0.0.1:{PORTS['nginx_bare']}", "https": None,
                   "h2": f"http://127.0.0.1:{PORTS['nginx_bare']+100}", "only": ("ka64", "h2")},
    "haproxy-bare": {"http": f"http://127.0.0.1:{PORTS['haproxy_bare']}", "https": None,
                     "h2": f"http://127.0.0.1:{PORTS['haproxy_bare']+100}", "only": ("ka64", "h2")},
}


def measure(fn, base, pid, duration):
    """One scenario run against one target: a 1 s warm-up, then `duration`
    seconds counted. The scenario's result, with the CPU seconds (user +
    system) process `pid` used per 100,000 requests (`cpu_s_per_100k`), and the
    two parts (`user_s_per_100k`: the proxy's own code; `sys_s_per_100k`: the
    kernel's work for it, mostly the sockets)."""
    fn(base, 1)
    u0, s0 = cpu_times(pid)
    res = fn(base, duration)
    u1, s1 = cpu_times(pid)
    per = 1e5 / max(res["requests"], 1)
    res["cpu_s_per_100k"] = round((u1 - u0 + s1 - s0) * per, 3)
    res["user_s_per_100k"] = round((u1 - u0) * per, 3)
    res["sys_s_per_100k"] = round((s1 - s0) * per, 3)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--scenarios", default="ka64,browser,ka1,ka4,1mib,close,tls,tlsnew,h2")
    ap.add_argument("--out", default=str(ROOT / "bench/results.json"))
    ap.add_argument("--pgo", action="store_true",
                    help=f"also run the profile-guided build ({PGO_BIN.relative_to(ROOT)}, made by bench/pgo.py)")
    a = ap.parse_args()
    targets = [t for t in TARGETS if a.pgo or t != "portcullis-pgo"]
    work = Path(tempfile.mkdtemp(prefix="pc-bench-"))
    # mkdtemp makes the folder 0700: nginx's workers (user nobody) could not read
    # www/1m and the 1 MiB scenario would measure 403s.
    os.chmod(work, 0o755)
    write_configs(work)
    s = Setup(work)
    try:
        s.start("backend", ["nginx", "-c", str(work / "backend.conf")], pin=0, port=PORTS["backend"])
        for name in ("nginx", "nginx-azurelog", "haproxy", "haproxy-nolog", "nginx-bare", "haproxy-bare", "portcullis"):
            start_proxy(s, work, name, pin=1)
        write_variant_config(work, "nometrics")
        os.environ["PORTCULLIS_BENCH_NO_METRICS"] = "1"
        start_proxy(s, work, "portcullis-nometrics", pin=1)
        del os.environ["PORTCULLIS_BENCH_NO_METRICS"]
        write_variant_config(work, "nolog", 'access_log = "off"')
        start_proxy(s, work, "portcullis-nolog", pin=1)
        if a.pgo:
            write_variant_config(work, "pgo")
            start_proxy(s, work, "portcullis-pgo", pin=1, binary=PGO_BIN)
        time.sleep(1)
        pids = {n: s.worker_pid(n) for n in s.procs}
        pids["direct"] = pids["backend"]
        results = {}
        # Every round's req/s and p99 by target, for the round-by-round ratios.
        every = {}
        for r in range(a.rounds):
            order = targets if r % 2 == 0 else targets[::-1]
            for sc in a.scenarios.split(","):
                desc, fn = SCENARIOS[sc]
                for t in order:
                    base = TARGETS[t]
                    if (sc in ("tls", "tlsnew") and not base["https"]) or (sc == "h2" and not base["h2"]):
                        continue
                    if sc not in base.get("only", (sc,)):
                        continue
                    res = measure(fn, base, pids[t], a.duration)
                    res["peak_rss_mib"] = round(peak_rss(pids[t]) / 1048576, 1)
                    key = f"{sc}/{t}"
                    every.setdefault(key, []).append({"round": r + 1, "rps": res["rps"], "p99_ms": res["p99_ms"],
                                                      "non2xx": res["non2xx"], "socket_errors": res["socket_errors"]})
                    best = results.get(key)
                    if best is None or res["rps"] > best["rps"]:
                        results[key] = res
                    print(f"round {r+1} {sc:6} {t:10} {res['rps']:>10.0f} req/s p50={res['p50_ms']} ms p99={res['p99_ms']} ms "
                          f"cpu/100k={res['cpu_s_per_100k']} s rss={res['peak_rss_mib']} MiB errors={res['non2xx']} {res['socket_errors']}",
                          flush=True)
        machine = {"nproc": os.cpu_count(), "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
                   "kernel": os.uname().release, "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        Path(a.out).write_text(json.dumps({"machine": machine, "duration_s": a.duration, "rounds": a.rounds,
                                           "pgo": a.pgo, "results": results, "rounds_by_target": every},
                                          indent=1))
        print_table(results, a.scenarios.split(","), machine)
        print_round_ratios(every, a.scenarios.split(","))
    finally:
        s.stop()
        shutil.rmtree(work, ignore_errors=True)


def print_table(results, scenarios, machine):
    print(f"\nMachine: {machine['nproc']} cores, {machine['cpu']}, kernel {machine['kernel']}, {machine['time']}\n")
    pgo = any(k.endswith("/portcullis-pgo") for k in results)
    print("| scenario | proxy | req/s | p50 ms | p99 ms | CPU s / 100k req | user + sys | peak RSS MiB | errors | portcullis ÷ this |"
          + (" portcullis-pgo ÷ this |" if pgo else ""))
    print("|---|---|---|---|---|---|---|---|---|---|" + ("---|" if pgo else ""))
    for sc in scenarios:
        for t in TARGETS:
            r = results.get(f"{sc}/{t}")
            if not r:
                continue
            ratios = []
            for mine in ("portcullis",) + (("portcullis-pgo",) if pgo else ()):
                pc = results.get(f"{sc}/{mine}", {}).get("rps")
                ratios.append(f"{pc / r['rps']:.2f}" if pc and r["rps"] and t != mine else "")
            fmt = lambda v: "-" if v is None else f"{v:.3f}"
            # Results written before the split have no parts.
            parts = (f"{r['user_s_per_100k']:.3f} + {r['sys_s_per_100k']:.3f}"
                     if "user_s_per_100k" in r else "")
            print(f"| {sc} | {t} | {r['rps']:.0f} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {r['cpu_s_per_100k']} | {parts} | {r['peak_rss_mib']} | {r['non2xx']} {r['socket_errors']} | "
                  + " | ".join(ratios) + " |")


# The pairs compared round by round: portcullis against each peer doing the same
# work, each variant against its own counterpart, and with --pgo the profile-guided
# build against both peers (a pair whose targets did not run is left out).
ROUND_PAIRS = [("portcullis", "nginx"), ("portcullis", "haproxy"), ("portcullis", "nginx-azurelog"),
               ("portcullis-nolog", "haproxy-nolog"), ("portcullis", "nginx-bare"),
               ("portcullis", "haproxy-bare"), ("portcullis-pgo", "nginx"), ("portcullis-pgo", "haproxy")]


def round_ratios(every, sc, mine, peer):
    """`mine` ÷ `peer` in req/s in each round where both ran `sc` (the two
    measured in the same round: with the default 5 s runs, 6 s a target, at
    most about a minute apart), in round order; [] when either did not run it."""
    a = {x["round"]: x["rps"] for x in every.get(f"{sc}/{mine}", [])}
    b = {x["round"]: x["rps"] for x in every.get(f"{sc}/{peer}", [])}
    return [a[r] / b[r] for r in sorted(a) if r in b and b[r]]


# Within this band of 1 a ratio reads "level" (3 %: this VM moves more than that
# between two runs of one binary); docs/benchmarks.md section 1 uses the same word.
LEVEL_BAND = 0.03


def print_round_ratios(every, scenarios):
    """Prints, for each scenario and pair of ROUND_PAIRS, the ratio of every
    round, their median, and in how many rounds the first was ahead, level
    (within LEVEL_BAND) and behind: the best
    round of each (the table) can come from minutes apart on a noisy VM,
    a round's pair cannot."""
    print(f"\nRound by round (req/s ratio in each round; median; rounds ahead / level, within "
          f"{LEVEL_BAND:.0%} / behind):\n")
    print("| scenario | pair | each round | median | ahead / level / behind |")
    print("|---|---|---|---|---|")
    for sc in scenarios:
        for mine, peer in ROUND_PAIRS:
            rs = round_ratios(every, sc, mine, peer)
            if not rs:
                continue
            print(f"| {sc} | {mine} ÷ {peer} | {' '.join(f'{x:.2f}' for x in rs)} | {statistics.median(rs):.2f} | "
                  f"{sum(x > 1 + LEVEL_BAND for x in rs)} / {sum(abs(x - 1) <= LEVEL_BAND for x in rs)} / "
                  f"{sum(x < 1 - LEVEL_BAND for x in rs)} |")


if __name__ == "__main__":
    main()
