"""How long the request thread waits for its core, and what the access-log writer's
scheduling does to it (docs/benchmarks.md section 2, "Where portcullis still trails",
twenty-second session).

    python3 bench/writer_wait.py [--bin PATH] [--scenarios ka4,ka1] [--rounds 8] [--writer idle|nice:N]

Two copies of the same binary run side by side, both with their access log, each pinned
to core 1 as in the throughput harness (run.py; backend and wrk on core 0): A as it is,
B with its `access-log` thread given another scheduling policy (`--writer idle`:
`chrt --idle`; `--writer nice:10`: `renice`). Per round and copy it prints wrk's req/s,
p50 and p99 (run.py's `wrk`), and, from the kernel's own accounting of the worker thread
(`/proc/PID/task/TID/schedstat`: time runnable but not running; `status`:
involuntary context switches), how long requests waited for the core while something
else ran on it. At the end, the medians per copy and scenario.

p99 on a shared VM moves by 2x from one 5 s round to the next; the wait does not, which
is why it is read here.
"""
import argparse, os, re, shutil, statistics, subprocess, time
from pathlib import Path

import run

CONNS = {"ka1": 1, "ka4": 4, "ka16": 16, "ka64": 64}


def worker_stat(pid):
    """(ns runnable but waiting, involuntary switches) of the process's main thread:
    with one core the tokio runtime runs on it (main.rs)."""
    wait_ns = int(open(f"/proc/{pid}/task/{pid}/schedstat").read().split()[1])
    status = open(f"/proc/{pid}/task/{pid}/status").read()
    return wait_ns, int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", status).group(1))


def set_writer_policy(pid, how):
    for tid in os.listdir(f"/proc/{pid}/task"):
        if open(f"/proc/{pid}/task/{tid}/comm").read().strip() == "access-log":
            if how == "idle":
                subprocess.run(["chrt", "--idle", "-p", "0", tid], check=True)
            elif how.startswith("nice:"):
                subprocess.run(["renice", "-n", how.split(":", 1)[1], "-p", tid], check=True, capture_output=True)
            else:
                raise SystemExit(f"--writer {how}: idle or nice:N")
            return tid
    raise SystemExit("no access-log thread found")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(run.ROOT / "target/release/portcullis"))
    ap.add_argument("--scenarios", default="ka4,ka1")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--writer", default="idle", help="B's access-log thread: idle (SCHED_IDLE) or nice:N")
    a = ap.parse_args()
    bin_path = str(Path(a.bin).resolve())
    work, s = run.backend_setup("pc-writer-wait-")
    try:
        s.start("a", [bin_path, "run", "-c", str(work / "portcullis.toml")], pin=1, port=run.PORTS["portcullis"])
        # B: the same config (its log on) on the ports of run.py's "nolog" variant.
        run.write_variant_config(work, "nolog")
        s.start("b", [bin_path, "run", "-c", str(work / "portcullis-nolog.toml")], pin=1,
                port=run.PORTS["portcullis_nolog"])
        time.sleep(1)
        pids = {"a": s.procs["a"].pid, "b": s.procs["b"].pid}  # taskset execs: the pid is portcullis's
        tid = set_writer_policy(pids["b"], a.writer)
        print(f"B's access-log thread {tid}: {a.writer}", flush=True)
        urls = {"a": run.TARGETS["portcullis"]["http"] + "/", "b": run.TARGETS["portcullis-nolog"]["http"] + "/"}
        got = {}
        for r in range(a.rounds):
            for sc in a.scenarios.split(","):
                for n in (("a", "b") if r % 2 == 0 else ("b", "a")):
                    run.wrk(urls[n], CONNS[sc], 1)  # warm-up
                    w0, nv0 = worker_stat(pids[n])
                    res = run.wrk(urls[n], CONNS[sc], a.duration)
                    w1, nv1 = worker_stat(pids[n])
                    wait_ms = (w1 - w0) / 1e6
                    got.setdefault((sc, n), []).append((res["rps"], res["p99_ms"], wait_ms))
                    print(f"round {r + 1} {sc} {n}: {res['rps']:>8.0f} req/s, p50 {res['p50_ms']} ms, "
                          f"p99 {res['p99_ms']} ms, worker waited {wait_ms:.1f} ms, involuntary switches {nv1 - nv0}",
                          flush=True)
        print()
        for (sc, n), rows in sorted(got.items()):
            p99 = [p for _, p, _ in rows if p is not None]
            print(f"{sc} {n} ({'as built' if n == 'a' else a.writer}): median p99 "
                  f"{statistics.median(p99):.3f} ms, median wait {statistics.median(w for *_, w in rows):.1f} ms "
                  f"per {a.duration} s, mean {statistics.mean(r for r, *_ in rows):.0f} req/s")
    finally:
        s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
