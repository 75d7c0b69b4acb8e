"""Memory with 10,000 idle keep-alive client connections: portcullis, nginx and HAProxy.

    python3 bench/idle.py [--conns N] [--bin PATH] [--tls]

One backend (nginx, 1 worker, a 6-byte body) and, one after the other, each proxy pinned
to core 1 in front of it. For each proxy: warm up (2,000 requests on 10 connections,
then closed), read the RSS ("before"); open N connections, each sending one
`GET /` and reading the whole answer, then left open and idle; read the RSS and the
proxy's open file descriptors ("with N"); with --tls, each connection is TLS 1.3 (ECDSA
P-256, ALPN http/1.1) to an https listener of each proxy, and the results go to
bench/idle-tls-results.json; check that the connections are still served
(one more request on 200 of them, chosen at random); close them all and, once the
proxy holds no more file descriptors than before (at most 15 s) and --settle + 2 s more
(4 s by default), read the RSS again ("after close"). RSS is VmRSS from /proc (for nginx: the worker, and master +
worker); kernel socket buffers are not part of it. Results: a markdown table and
bench/idle-results.json.

File descriptors: the script raises its soft RLIMIT_NOFILE to the hard limit (the proxies
inherit it); nginx gets worker_rlimit_nofile and worker_connections, HAProxy maxconn,
above N (plus `no strict-limits` when the hard limit is below HAProxy's 2 x maxconn
reservation, e.g. 20000: HAProxy 2.6 would refuse to start). N must stay below about (hard limit - 200): the client and the proxy each hold
N sockets.
"""
import argparse, asyncio, json, random, resource, shutil, socket, ssl, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, Setup, single_pool_config, start_checked, children, copy_binary, fd_count, machine, pin_self, raise_nofile, rss,  # noqa: E402
                    make_certificate, tools_check)

BACKEND, FRONT, CONSOLE = 14280, 14281, 14290  # below the e2e tests' 15000-32000


def configs(w, n, tls):
    """The backend's and the proxies' configs; with `tls`, each proxy's front is
    https with a new self-signed ECDSA P-256 certificate."""
    lim = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    ssl_listen, ssl_bind, https = "", "", ""
    if tls:
        make_certificate(w)
        # nginx 1.22 enables TLS 1.3 only when asked (its default is TLSv1 to TLSv1.2
        # until 1.23.4); portcullis and HAProxy speak 1.3.
        ssl_listen = f" ssl; ssl_certificate {w}/cert.pem; ssl_certificate_key {w}/key.pem; ssl_protocols TLSv1.2 TLSv1.3"
        ssl_bind = f" ssl crt {w}/both.pem alpn http/1.1"
        https = f'protocol = "https"\ntls = {{ certificate = "{w}/cert.pem", key = "{w}/key.pem" }}\n'

    (w / "backend.conf").write_text(f"""worker_processes 1; daemon off; pid {w}/backend.pid; error_log {w}/backend.error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  server {{ listen 127.0.0.1:{BACKEND} backlog=4096; location = / {{ return 200 "hello\\n"; }} }} }}
""")
    (w / "nginx.conf").write_text(f"""worker_processes 1; daemon off; pid {w}/nginx.pid; error_log {w}/nginx.error.log warn;
worker_rlimit_nofile {lim};
events {{ worker_connections {min(lim - 100, n + 2000)}; }}
http {{ access_log {w}/nginx.access.log combined buffer=64k flush=1s;
  keepalive_requests 1000000; keepalive_timeout 600s;
  upstream b {{ server 127.0.0.1:{BACKEND}; keepalive 128; }}
  server {{ listen 127.0.0.1:{FRONT} backlog=4096{ssl_listen};
    location / {{ proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
    # HAProxy reserves 2 fds per connection (client + server side) and refuses to start when
    # 2 x maxconn does not fit the hard limit; the idle clients need only one each.
    strict = "" if 2 * (n + 200) + 100 <= lim else "  no strict-limits\n"
    (w / "haproxy.cfg").write_text(f"""global
  nbthread 1
{strict}  maxconn {n + 200}
defaults
  mode http
  maxconn {n + 200}
  timeout connect 5s
  timeout client 600s
  timeout server 60s
  timeout http-keep-alive 600s
  option http-keep-alive
frontend f
  bind 127.0.0.1:{FRONT} backlog 4096{ssl_bind}
  default_backend b
backend b
  server s1 127.0.0.1:{BACKEND}
""")
    (w / "portcullis.toml").write_text(single_pool_config(w, FRONT, CONSOLE, BACKEND, listener=https))


REQ = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{FRONT}\r\nUser-Agent: pc-bench-idle\r\n\r\n".encode()


async def one_request(r, w):
    w.write(REQ)
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":", 1)[1])
    await r.readexactly(n)
    return status


def client_tls():
    """The clients' TLS: any certificate (the proxies' are self-signed), HTTP/1.1."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


TLS = None  # the clients' ssl.SSLContext with --tls


def connect():
    if TLS is None:
        return asyncio.open_connection("127.0.0.1", FRONT)
    return asyncio.open_connection("127.0.0.1", FRONT, ssl=TLS, server_hostname="localhost")


async def open_conn(sem, conns, errors):
    async with sem:
        try:
            r, w = await asyncio.wait_for(connect(), 10)
            s = await asyncio.wait_for(one_request(r, w), 10)
            if s != 200:
                errors.append(f"status {s}")
            conns.append((r, w))
        except Exception as e:
            errors.append(repr(e)[:100])


async def measure(n, pids, settle):
    def mem():
        return {k: rss(p) for k, p in pids.items()}

    # warm-up: 2,000 requests on 10 connections
    warm = [await connect() for _ in range(10)]
    for _ in range(200):
        await asyncio.gather(*(one_request(r, w) for r, w in warm))
    for _, w in warm:
        w.close()
    await asyncio.sleep(settle)
    before = mem()
    fds_before = fd_count(pids["main"])
    conns, errors = [], []
    sem = asyncio.Semaphore(200)
    t = time.monotonic()
    await asyncio.gather(*(open_conn(sem, conns, errors) for _ in range(n)))
    open_s = time.monotonic() - t
    await asyncio.sleep(settle)
    with_n = mem()
    fds_with = fd_count(pids["main"])
    # still served?
    sample = random.Random(1).sample(range(len(conns)), min(200, len(conns)))
    served = 0
    for i in sample:
        try:
            if await asyncio.wait_for(one_request(*conns[i]), 10) == 200:
                served += 1
        except Exception:
            pass
    still_open = sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())
    for _, w in conns:
        w.close()
    # "After close": once the proxy holds no more descriptors than before
    # (portcullis and nginx keep pooled backend connections for a while after
    # the clients go), at most 15 s, then 2 s more than the settle time: an
    # allocator gives freed memory back after a delay of its own (mimalloc
    # about a second after its last use; read at 3 s, portcullis's reading fell
    # between runs from 28.5 to 12.5 MiB, 2026-12-06).
    t_close = time.monotonic()
    while fd_count(pids["main"]) > fds_before and time.monotonic() - t_close < 15:
        await asyncio.sleep(0.25)
    await asyncio.sleep(settle + 2)
    after = mem()
    return {"opened": len(conns), "open_errors": len(errors), "open_error_samples": errors[:5],
            "open_seconds": round(open_s, 2), "still_open": still_open, "sample_served": f"{served}/{len(sample)}",
            "rss_before": before, "rss_with": with_n, "rss_after_close": after,
            "fds_before": fds_before, "fds_with": fds_with}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--bin", default=str(ROOT / "target/release/portcullis"))
    ap.add_argument("--proxies", default="portcullis,nginx,haproxy")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait before each reading")
    ap.add_argument("--tls", action="store_true", help="TLS connections (https listeners)")
    ap.add_argument("--out", help="default bench/idle-results.json, with --tls bench/idle-tls-results.json")
    a = ap.parse_args()
    a.out = a.out or str(ROOT / ("bench/idle-tls-results.json" if a.tls else "bench/idle-results.json"))
    global TLS
    TLS = client_tls() if a.tls else None
    tools_check(["nginx", "haproxy", "taskset"])
    soft, hard = raise_nofile()
    if a.conns + 200 > soft:
        raise SystemExit(f"open-files limit {soft} is too low for {a.conns} connections (client and proxy each hold them)")
    pin_self(0)
    w = Path(tempfile.mkdtemp(prefix="pc-idle-"))
    binary, bininfo = copy_binary(a.bin, w)
    configs(w, a.conns, a.tls)
    s = Setup(w)
    results = {}
    try:
        start_checked(s, "backend", ["nginx", "-c", str(w / "backend.conf")], pin=0, port=BACKEND)
        for px in a.proxies.split(","):
            argv = {"portcullis": [str(binary), "run", "-c", str(w / "portcullis.toml")],
                    "nginx": ["nginx", "-c", str(w / "nginx.conf")],
                    "haproxy": ["haproxy", "-f", str(w / "haproxy.cfg")]}[px]
            p = start_checked(s, px, argv, pin=1, port=FRONT)
            time.sleep(1)
            pids = {"main": p.pid}
            if px == "nginx":
                pids = {"main": children(p.pid)[0], "master": p.pid}
            res = asyncio.run(measure(a.conns, pids, a.settle))
            res["limits"] = open(f"/proc/{pids['main']}/limits").read().split("Max open files")[1].split("\n")[0].split()[:2]
            res["proxy_stderr_tail"] = (w / f"{px}.err").read_text(errors="replace")[-600:]
            s.procs.pop(px)
            import signal, os
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)
            b, wn = res["rss_before"], res["rss_with"]
            tot = lambda d: sum(d.values())
            res["per_conn_bytes"] = round((wn["main"] - b["main"]) / max(res["opened"], 1))
            res["per_conn_bytes_all_processes"] = round((tot(wn) - tot(b)) / max(res["opened"], 1))
            results[px] = res
            print(f"{px:10} opened={res['opened']} errors={res['open_errors']} fds={res['fds_before']}->{res['fds_with']} "
                  f"rss {b['main'] / 2**20:.1f} -> {wn['main'] / 2**20:.1f} MiB ({res['per_conn_bytes']} B/conn), "
                  f"after close {res['rss_after_close']['main'] / 2**20:.1f} MiB, still open {res['still_open']}, "
                  f"served {res['sample_served']}", flush=True)
    finally:
        s.stop()
        shutil.rmtree(w, ignore_errors=True)
    doc = {"machine": machine(), "binary": bininfo, "conns": a.conns, "tls": a.tls, "nofile": [soft, hard],
           "results": results}
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print_table(doc)
    print(f"\nwritten: {a.out}")


def print_table(doc):
    m = doc["machine"]
    mib = lambda v: f"{v / 2**20:.1f}"
    print(f"\nMachine: {m['nproc']} cores, {m['cpu']}, kernel {m['kernel']}, {m['time']}; "
          f"binary {doc['binary']['git_head']}; {doc['conns']} {'TLS ' if doc.get('tls') else ''}connections\n")
    print(f"| proxy | RSS before (MiB) | RSS with {doc['conns']} idle (MiB) | bytes per connection | RSS after close (MiB) "
          f"| proxy fds with | still served |")
    print("|---|---|---|---|---|---|---|")
    for px, r in doc["results"].items():
        note = ""
        if "master" in r["rss_before"]:
            note = f" (+ master {mib(r['rss_with']['master'])})"
        print(f"| {px} | {mib(r['rss_before']['main'])} | {mib(r['rss_with']['main'])}{note} | {r['per_conn_bytes']} "
              f"| {mib(r['rss_after_close']['main'])} | {r['fds_with']} | {r['sample_served']} |")


if __name__ == "__main__":
    main()
