"""System calls a request of each proxy of bench/run.py (`strace -c -f` on its
process while `wrk` runs), as docs/benchmarks.md section 1 reads ka1:

    python3 bench/syscalls.py [--conns 1] [--path /] [--proxies portcullis,nginx,haproxy]

Starts the backend and the proxies named, with run.py's configs and pinning (backend
and wrk on core 0, the proxy on core 1), warms each up for 1 s, then attaches strace to
its process (every thread) for 3 s of `wrk -c CONNS` and prints each call's count
divided by the requests wrk made. strace slows the proxy several times over, so read
the counts, not the req/s. Needs strace and run.py's peers (bench/run.sh installs
them, not strace: `apt-get install strace`).
"""
import argparse, re, shutil, subprocess, time

import run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--path", default="/")
    ap.add_argument("--proxies", default="portcullis,nginx,haproxy")
    a = ap.parse_args()
    names = a.proxies.split(",")
    work, s = run.backend_setup("pc-syscalls-")
    try:
        for n in names:
            run.start_proxy(s, work, n, pin=1)
        time.sleep(1)
        for n in names:
            url = run.TARGETS[n]["http"] + a.path
            run.wrk(url, a.conns, 1)
            out = work / f"{n}.strace"
            tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(s.worker_pid(n)), "-o", str(out)],
                                      stderr=subprocess.DEVNULL)
            time.sleep(1)
            res = run.wrk(url, a.conns, 3)
            time.sleep(0.2)
            tracer.send_signal(2)
            tracer.wait()
            reqs = max(res["requests"], 1)
            print(f"== {n}: {res['requests']} requests ({res['rps']:.0f} req/s under strace)")
            for line in out.read_text().splitlines():
                # strace -c: % time, seconds, usecs/call, calls, [errors,] syscall
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)?\s*(\w+)$", line)
                if m:
                    print(f"   {m.group(3):20} {int(m.group(1)) / reqs:7.3f} a request"
                          f"  (errors {int(m.group(2) or 0) / reqs:.3f})")
    finally:
        s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
