"""User-space instructions per proxied request, counted by callgrind (see docs/benchmarks.md §2).

Wall-clock CPU time on a shared VM moves by ±15 % from run to run; an instruction
count does not (the same binary and input give the same count to within a few
tenths of a percent, whatever else the machine is doing). So this is how two builds
are compared: each runs under `valgrind --tool=callgrind`, with counting off while
it starts and takes a warm-up of 2,000 requests, then on for exactly N keep-alive
requests over 64 connections (h2load --h1; --scenario h2: HTTP/2 with prior knowledge,
16 connections x 10 streams; --scenario close: a new connection per request, 16 at a
time, for 10 s with wrk, divided by wrk's count), then off again. Kernel time is not
counted: this measures only the proxy's own work (portcullis, its libraries, libc).

    bash bench/run.sh instructions                      # target/release/portcullis
    bash bench/run.sh instructions --bin OLD --bin NEW  # A/B, each line with its ratio to the first
    bash bench/run.sh instructions --scenario browser --top 25
    bash bench/run.sh instructions --peers              # portcullis-nolog, nginx, nginx-azurelog, HAProxy, the -bare peers too
    bash bench/run.sh instructions --atomics            # and the locked instructions per request (locked.py)

--peers counts the throughput harness's peers (run.py's configs) the same way, each as
one process: where CPU seconds per request on a noisy VM put two proxies within 10 %
of each other one run and 30 % the next, this says how much work each does in user
space. Prints one line per binary and, with --top K, the K functions with the most
instructions of its own (callgrind_annotate, exclusive counts).

--cache-sim adds callgrind's cache and branch simulation (about 2x slower) and prints,
per request, the simulated first-level instruction-cache misses (I1), data-cache misses
(D1, reads and writes) and mispredicted branches (conditional and indirect). The
simulated caches are this CPU's first level as valgrind reads it (32 KiB each here);
kernel code is not simulated, so the figures say how much code and data a proxy
touches per request, not how a real core's caches fare. A proxy whose code path
for one request spans more cache lines than another's runs slower at the same
instruction count: docs/benchmarks.md §2.
"""
import argparse, re, subprocess, sys, tempfile, time
from pathlib import Path

import locked, run

PORT, CONSOLE, TLS = 18181, 18191, 18541
# --scenario close counts for a fixed time (wrk) rather than a fixed number of requests.
CLOSE_SECONDS = 10


def portcullis_cmd(bin_path, w, label):
    """portcullis on its own ports, so it never meets a harness run's."""
    cfg = (w / "portcullis.toml").read_text()
    cfg = cfg.replace(f"127.0.0.1:{run.PORTS['portcullis']}\"", f"127.0.0.1:{PORT}\"")
    cfg = cfg.replace(f"127.0.0.1:{run.PORTS['console']}\"", f"127.0.0.1:{CONSOLE}\"")
    cfg = cfg.replace(f"127.0.0.1:{run.PORTS['portcullis_tls']}\"", f"127.0.0.1:{TLS}\"")
    cfg = cfg.replace(f'state_dir = "{w}/state"', f'state_dir = "{w}/state-{label}"')
    (w / f"cg-{label}.toml").write_text(cfg)
    # Its listener takes HTTP/2 with prior knowledge on the same port.
    url = f"http://127.0.0.1:{PORT}"
    return [str(bin_path), "run", "-c", str(w / f"cg-{label}.toml")], PORT, {"http": url, "h2": url}


def peer_cmd(name, w, bin_path):
    """A peer with the throughput harness's config (run.py), in one process:
    nginx without its master (`master_process off`), so its one worker is the
    process callgrind counts; HAProxy in the foreground, as run.py starts it;
    portcullis-nolog is the first binary with `access_log = "off"`. Its URLs
    are run.py's (`TARGETS`)."""
    urls = dict(run.TARGETS[name])
    port = run.PORTS[name.replace("-", "_")]
    if name == "portcullis-nolog":
        run.write_variant_config(w, "nolog", 'access_log = "off"')
        return [str(bin_path), "run", "-c", str(w / "portcullis-nolog.toml")], port, urls
    if name.startswith("haproxy"):
        return ["haproxy", "-f", str(w / f"{name}.cfg")], port, urls
    conf = w / f"cg-{name}.conf"
    conf.write_text("master_process off;\n" + (w / f"{name}.conf").read_text())
    return ["nginx", "-c", str(conf)], port, urls


def count(cmd, w, label, scenario, requests, top, cache_sim=False, atomics=False):
    """Instructions per request, the --top lines, with `cache_sim` the
    simulated misses per request ({event: count}), and with `atomics` the
    locked instructions per request and their top sites (locked.py)."""
    argv, port, urls = cmd
    out = w / f"callgrind-{label}.out"
    s = run.Setup(w)
    sim = ["--cache-sim=yes", "--branch-sim=yes"] if cache_sim else []
    if atomics:
        sim += ["--dump-instr=yes", "--dump-line=no", "--compress-pos=no", "--compress-strings=no"]
    # Pinned to one core like the throughput harness: the single-threaded runtime.
    s.start(label, ["valgrind", "--tool=callgrind", "--instr-atstart=no", *sim, f"--callgrind-out-file={out}",
                    *argv], pin=1, port=port)
    try:
        pid = s.procs[label].pid
        extra = list(run.BROWSER_FIELDS) if scenario == "browser" else []
        if scenario == "h2":
            # As run.py's h2 scenario: cleartext HTTP/2 with prior knowledge,
            # 16 connections x 10 streams.
            load = ["taskset", "-c", "0", "h2load", "-c", "16", "-m", "10", urls["h2"] + "/"]
        elif scenario == "close":
            # As run.py's close scenario: a new connection per request, 16 at a
            # time. wrk, because h2load does not reconnect: so a fixed time
            # (about 1,000 requests a second under callgrind) and wrk's count.
            load = ["taskset", "-c", "0", "wrk", "-t1", "-c16", "-H", "Connection: close", urls["http"] + "/"]
        else:
            # ka1: one connection, as run.py's latency scenario: every request is
            # a turn of the event loop of its own.
            conns = "1" if scenario == "ka1" else "64"
            load = ["taskset", "-c", "0", "h2load", "--h1", "-c", conns, *extra, urls["http"] + "/"]
        ctl = lambda *a: subprocess.run(["callgrind_control", *a, str(pid)], check=True, capture_output=True)
        # Warm-up, then the counted run: a fixed time for close, a fixed count else.
        warm, counted = ((["-d2s"], [f"-d{CLOSE_SECONDS}s"]) if scenario == "close"
                         else (["-n", "2000"], ["-n", str(requests)]))
        subprocess.run(load[:4] + warm + load[4:], check=True, capture_output=True)
        # valgrind's own pid is the process (taskset execs it).
        ctl("-i", "on")
        done = subprocess.run(load[:4] + counted + load[4:], check=True, capture_output=True, text=True).stdout
        ctl("-i", "off")
        ctl("-d")
        if scenario == "close":
            requests = int(re.search(r"(\d+) requests in", done).group(1))
            failed = "Non-2xx" in done or "Socket errors" in done
        else:
            ok = re.search(r"(\d+) succeeded", done)
            failed = not ok or int(ok.group(1)) != requests
        if failed:
            raise SystemExit(f"{label}: not every request succeeded:\n{done}")
    finally:
        s.stop()
    dumps = sorted(w.glob(f"callgrind-{label}.out*"), key=lambda p: p.stat().st_size)
    text = subprocess.run(["callgrind_annotate", str(dumps[-1])], capture_output=True, text=True).stdout
    # The first column is Ir (with --cache-sim, the misses follow it).
    totals = re.search(r"^(.*)PROGRAM TOTALS", text, re.M).group(1)
    total = int(re.search(r"([\d,]+) \(", totals).group(1).replace(",", ""))
    misses = {}
    if cache_sim:
        events = re.search(r"Events recorded:\s+(.*)", text).group(1).split()
        per = dict(zip(events, (int(n.replace(",", "")) / requests for n in re.findall(r"([\d,]+) \(", totals))))
        misses = {"I1": per.get("I1mr", 0), "D1": per.get("D1mr", 0) + per.get("D1mw", 0),
                  "branch": per.get("Bcm", 0) + per.get("Bim", 0)}
    lines = []
    if top:
        body = text.split("file:function", 1)[1].splitlines()[2:]
        lines = [l for l in body if l.strip()][:top]
    if atomics:
        misses["locked"] = locked.count(str(dumps[-1]), requests, top=max(top, 10))
    return total / requests, lines, misses, requests


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", help="portcullis binaries (default: target/release/portcullis)")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--scenario", choices=("ka64", "ka1", "browser", "h2", "close"), default="ka64")
    ap.add_argument("--top", type=int, default=0)
    ap.add_argument("--cache-sim", action="store_true",
                    help="also simulate the first-level caches and branch prediction (misses per request)")
    ap.add_argument("--peers", action="store_true",
                    help="count portcullis-nolog, nginx, nginx-azurelog, HAProxy, haproxy-nolog, nginx-bare and "
                         "haproxy-bare too, under the same load")
    ap.add_argument("--atomics", action="store_true",
                    help="also count the locked (atomic read-modify-write) instructions per request and where they are")
    a = ap.parse_args()
    bins = [Path(b).resolve() for b in (a.bin or [run.BIN])]
    w = Path(tempfile.mkdtemp(prefix="pc-instr-"))
    w.chmod(0o755)
    run.write_configs(w)
    backend = run.Setup(w)
    backend.start("backend", ["nginx", "-c", str(w / "backend.conf")], pin=0, port=run.PORTS["backend"])
    try:
        runs = [(str(b), portcullis_cmd(b, w, f"b{i}")) for i, b in enumerate(bins)]
        if a.peers:
            peers = [(name, peer_cmd(name, w, bins[0]))
                     for name in ("portcullis-nolog", "nginx", "nginx-azurelog", "haproxy", "haproxy-nolog",
                                  "nginx-bare", "haproxy-bare")]
            # nginx-azurelog has no HTTP/2 listener.
            runs += [(name, cmd) for name, cmd in peers if a.scenario != "h2" or cmd[2]["h2"]]
        first = None
        for i, (name, cmd) in enumerate(runs):
            per, lines, misses, n = count(cmd, w, f"b{i}", a.scenario, a.requests, a.top, a.cache_sim,
                                          a.atomics)
            first = first or per
            print(f"{name}: {per:,.0f} instructions per request ({a.scenario}, {n} requests)"
                  + (f", {per / first:.3f} x the first" if i else ""), flush=True)
            if "locked" in misses:
                n_locked, sites = misses.pop("locked")
                print(f"    locked instructions per request: {n_locked:.1f}", flush=True)
                for per_req, insn, sym in sites:
                    print(f"      {per_req:6.2f}  {insn:22s} {sym[:150]}", flush=True)
            if misses:
                print(f"    simulated misses per request: I1 {misses['I1']:,.0f}, D1 {misses['D1']:,.0f},"
                      f" branches {misses['branch']:,.0f}", flush=True)
            for l in lines:
                print("   ", l[:200])
            time.sleep(0.5)
    finally:
        backend.stop()


if __name__ == "__main__":
    sys.exit(main())
