"""Wall-clock A/B of two portcullis builds, side by side (docs/benchmarks.md §2).

    bash bench/run.sh ab --bin OLD --bin NEW [--scenario h2] [--rounds 6] [--duration 5]

Both builds run at once, each pinned to core 1 as in the throughput harness
(run.py), with the same config on their own ports, behind the harness's nginx
backend on core 0; the rounds alternate which build goes first. Per round and
build it prints requests per second, the p99 latency (wrk's; for h2, h2load's per-request log) and
the proxy's CPU seconds per 100,000 requests (user + system, /proc/PID/stat,
and each part), then the mean of each over the rounds (the median of the p99s)
and NEW's ratio to OLD. A change to portcullis's own code moves
the user part; the system part is the kernel's socket work, the same for both
builds unless the system calls changed. On a shared VM one round moves by ±15 %, so use several
rounds and read the means; instructions.py counts work without that noise.
"""
import argparse, os, shutil, sys, tempfile, time
from pathlib import Path

import run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", required=True, help="two portcullis binaries: OLD, then NEW")
    # Not tls: the second build's variant config has no TLS listener.
    ap.add_argument("--scenario", choices=[k for k in run.SCENARIOS if k not in ("tls", "tlsnew")], default="ka64")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=int, default=5)
    a = ap.parse_args()
    if len(a.bin) != 2:
        raise SystemExit("give --bin twice: OLD, then NEW")
    work = Path(tempfile.mkdtemp(prefix="pc-ab-"))
    os.chmod(work, 0o755)  # nginx's workers read www/ (see run.py)
    run.write_configs(work)
    # NEW on the ports of the harness's "nolog" variant, with the same config.
    run.write_variant_config(work, "nolog")
    s = run.Setup(work)
    names = ("old", "new")
    try:
        s.start("backend", ["nginx", "-c", str(work / "backend.conf")], pin=0, port=run.PORTS["backend"])
        s.start("old", [str(Path(a.bin[0]).resolve()), "run", "-c", str(work / "portcullis.toml")], pin=1,
                port=run.PORTS["portcullis"])
        s.start("new", [str(Path(a.bin[1]).resolve()), "run", "-c", str(work / "portcullis-nolog.toml")], pin=1,
                port=run.PORTS["portcullis_nolog"])
        time.sleep(1)
        base = {"old": run.TARGETS["portcullis"], "new": run.TARGETS["portcullis-nolog"]}
        fn = run.SCENARIOS[a.scenario][1]
        got = {n: [] for n in names}
        p99 = {n: [] for n in names}
        for r in range(a.rounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                res = run.measure(fn, base[n], s.worker_pid(n), a.duration)
                cpu, user, sys_ = res["cpu_s_per_100k"], res["user_s_per_100k"], res["sys_s_per_100k"]
                got[n].append((res["rps"], cpu, user, sys_))
                if res.get("p99_ms") is not None:
                    p99[n].append(res["p99_ms"])
                tail = f", p99 {res['p99_ms']:.3f} ms" if res.get("p99_ms") is not None else ""
                print(f"round {r + 1} {n}: {res['rps']:>9.0f} req/s{tail}, CPU {cpu:.3f} s per 100k "
                      f"(user {user:.3f}, system {sys_:.3f}), errors {res['non2xx']} {res['socket_errors']}", flush=True)
        # Means over the rounds: req/s, CPU, user, system.
        mean = {n: [sum(r[i] for r in got[n]) / a.rounds for i in range(4)] for n in names}
        for n, b in zip(names, a.bin):
            tail = f", median p99 {sorted(p99[n])[len(p99[n]) // 2]:.3f} ms" if p99[n] else ""
            print(f"{n} ({b}): mean {mean[n][0]:.0f} req/s{tail}, CPU {mean[n][1]:.3f} s per 100k "
                  f"(user {mean[n][2]:.3f}, system {mean[n][3]:.3f})")
        ratio = lambda i: mean["new"][i] / mean["old"][i] if mean["old"][i] else float("nan")
        print(f"new / old: req/s {ratio(0):.3f}, CPU per request {ratio(1):.3f} (user {ratio(2):.3f}, "
              f"system {ratio(3):.3f}) ({a.scenario}, {a.rounds} rounds of {a.duration} s)")
    finally:
        s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
