"""Where one connection's request spends its user-space time, between system calls
(docs/benchmarks.md section 2): each proxy, alone, behind run.py's backend and pinned
as in run.py, serves wrk with one keep-alive connection (ka1) while `perf record`
takes the raw system-call tracepoints of its process. For every system call of the
proxy's threads, the time since the same thread's previous call returned is the
user-space time spent before it. Prints, per (thread, call, file descriptor), the
calls per request and the median time before them, and the sum per request.

    bash bench/run.sh gaps                                  # portcullis (target/release) and nginx
    bash bench/run.sh gaps portcullis=OLD portcullis=NEW nginx haproxy
    SECS=5 REPEAT=2 bash bench/run.sh gaps ...              # longer, and each twice

Reading it: in ka1 a proxy makes four socket calls a request (two reads, two writes)
and two `epoll_wait`s; the median before the write to the backend is the request leg
(client read -> backend write), before the write to the client the answer leg. The
tracing slows every call by a few microseconds, the same for every proxy: compare
proxies and builds in one run, do not read the figures as absolute. Needs `perf`
(Debian's linux-perf) with access to the `raw_syscalls` tracepoints (root).
"""
import os, re, subprocess, sys, shutil, time
from pathlib import Path

import run

SECS = int(os.environ.get("SECS", "3"))
REPEAT = int(os.environ.get("REPEAT", "1"))
# x86_64 system call numbers of the calls the proxies make while serving.
NAMES = {0: "read", 1: "write", 3: "close", 19: "readv", 20: "writev", 24: "sched_yield",
         41: "socket", 42: "connect", 44: "sendto", 45: "recvfrom", 46: "sendmsg",
         47: "recvmsg", 55: "getsockopt", 202: "futex", 221: "fadvise64", 230: "clock_nanosleep",
         232: "epoll_wait", 233: "epoll_ctl", 281: "epoll_pwait", 288: "accept4", 441: "epoll_pwait2"}
NO_FD = {24, 202, 230, 232, 281, 441}


def start(s, work, name, binp):
    if name == "portcullis":
        s.start(name, [binp or str(run.BIN), "run", "-c", str(work / "portcullis.toml")], pin=1,
                port=run.PORTS["portcullis"])
    elif name == "nginx":
        s.start(name, ["nginx", "-c", str(work / "nginx.conf")], pin=1, port=run.PORTS["nginx"])
    elif name == "haproxy":
        s.start(name, ["haproxy", "-f", str(work / "haproxy.cfg")], pin=1, port=run.PORTS["haproxy"])
    else:
        raise SystemExit(f"unknown proxy {name} (portcullis[=BIN], nginx, haproxy)")


def measure(name, binp):
    work, s = run.backend_setup("pc-gaps-")
    try:
        start(s, work, name, binp)
        time.sleep(0.5)
        pid = s.worker_pid(name)
        url = run.TARGETS[name]["http"] + "/"
        wrk = ["taskset", "-c", "0", "wrk", "-t1", "-c1"]
        subprocess.run(wrk + ["-d1s", url], capture_output=True)
        rec = subprocess.Popen(["perf", "record", "-q", "-o", str(work / "p.data"), "-e",
                                "raw_syscalls:sys_enter,raw_syscalls:sys_exit", "-p", str(pid)],
                               stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        out = subprocess.run(wrk + [f"-d{SECS}s", url], capture_output=True, text=True).stdout
        rec.send_signal(2)
        rec.wait()
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        txt = subprocess.run(["perf", "script", "--ns", "-i", str(work / "p.data"), "-F", "tid,time,event,trace"],
                             capture_output=True, text=True).stdout
    finally:
        s.stop()
        shutil.rmtree(work, ignore_errors=True)
    last_exit, gaps, counts = {}, {}, {}
    for line in txt.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+) (.*)", line)
        if not m:
            continue
        tid, t, kind, nr, rest = m.group(1), float(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        if kind == "exit":
            last_exit[tid] = t
            continue
        args = re.match(r"\(([^)]*)\)", rest)
        fd = "" if nr in NO_FD or not args or not args.group(1) else int(args.group(1).split(",")[0], 16)
        key = ("main" if tid == str(pid) else "other", NAMES.get(nr, str(nr)), fd)
        counts[key] = counts.get(key, 0) + 1
        if tid in last_exit:
            gaps.setdefault(key, []).append((t - last_exit[tid]) * 1e6)
    label = f"{name} {Path(binp).name}" if binp else name
    print(f"== {label}: {rps:.0f} req/s, {reqs} requests; user-space µs before each call (median), calls a request")
    total = 0.0
    for key, c in sorted(counts.items(), key=lambda x: -x[1]):
        g = sorted(gaps.get(key, [0.0]))
        total += sum(g) / reqs
        if c >= reqs * 0.05:
            print(f"   {key[0]:5} {key[1]:12} fd {key[2]!s:4} {c / reqs:5.2f} a request   median {g[len(g) // 2]:6.1f}")
    print(f"   user-space time a request (sum of the gaps): {total:.1f} µs")


def main():
    if shutil.which("perf") is None:
        raise SystemExit("gaps.py needs perf (Debian: apt-get install linux-perf)")
    targets = sys.argv[1:] or ["portcullis", "nginx"]
    for _ in range(REPEAT):
        for t in targets:
            name, _, binp = t.partition("=")
            measure(name, binp)


if __name__ == "__main__":
    main()
