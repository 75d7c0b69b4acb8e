"""Memory while requests wait for a slow backend: portcullis builds side by side.

    python3 bench/waiting.py [--requests 1000] [--ms 20000] [--bin OLD --bin NEW ...]

A `portcullis demo-app` backend (pinned to core 0) answers `GET /slow?ms=M` after M ms.
For each binary, one after the other: a gateway pinned to core 1 in front of it, warmed
up (2,000 quick requests, each on its own connection, 10 at a time), its RSS read
("before"); then N client connections each send one `GET /slow?ms=M` and wait. Once the
gateway's open file descriptors have stopped changing for a second (a client and a
backend connection for each request; at most half of M after the last request went out),
the RSS is read again ("waiting"): what N waiting requests cost. Then every answer is read,
and the script fails unless all N are 200.
RSS is VmRSS from /proc and its heap part, RssAnon (bench/common.py `rss_parts`).
Results: a table and bench/waiting-results.json (docs/benchmarks.md section 5).
"""
import argparse, asyncio, json, shutil, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, Setup, copy_binary, fd_count, machine, pin_self, raise_nofile, rss_parts,  # noqa: E402
                    single_pool_config, start_checked)

BACKEND, FRONT, CONSOLE = 14480, 14481, 14490  # apart from the other scripts' and the e2e tests' ports


async def request(path):
    r, w = await asyncio.open_connection("127.0.0.1", FRONT)
    w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await w.drain()
    return r, w


async def answer(r, w):
    data = await r.read()
    w.close()
    return data.split(b" ", 2)[1] if data.startswith(b"HTTP/1.1 ") else b"none"


async def measure(pid, n, ms):
    for _ in range(200):  # warm-up: 2,000 quick requests, 10 at a time
        await asyncio.gather(*[answer(*await request("/slow?ms=0")) for _ in range(10)])
    await asyncio.sleep(1)
    before, fds_before = rss_parts(pid), fd_count(pid)
    conns = []
    for i in range(0, n, 100):
        conns += await asyncio.gather(*[request(f"/slow?ms={ms}") for _ in range(min(100, n - i))])
    sent = time.monotonic()
    deadline = sent + ms / 2000
    seen = []
    while time.monotonic() < deadline:
        seen.append(fd_count(pid))
        # Every request on its way: the count has held for a second, above one fd a request.
        if len(seen) >= 5 and len(set(seen[-5:])) == 1 and seen[-1] >= fds_before + n:
            break
        await asyncio.sleep(0.2)
    waiting, fds_waiting = rss_parts(pid), fd_count(pid)
    print(f"  read {time.monotonic() - sent:.1f} s after the requests were sent", flush=True)
    codes = await asyncio.gather(*[answer(r, w) for r, w in conns])
    return {"before": before, "waiting": waiting, "fds_before": fds_before, "fds_waiting": fds_waiting,
            "answers": {c.decode(errors="replace"): codes.count(c) for c in set(codes)}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--ms", type=int, default=20000, help="how long the backend keeps each request, ms")
    ap.add_argument("--bin", action="append", help="portcullis binaries (default: target/release/portcullis)")
    ap.add_argument("--out", default=str(ROOT / "bench/waiting-results.json"))
    a = ap.parse_args()
    bins = a.bin or [str(ROOT / "target/release/portcullis")]
    soft, _ = raise_nofile()
    if 2 * a.requests + 200 > soft:
        raise SystemExit(f"open-files limit {soft} is too low for {a.requests} requests")
    pin_self(0)
    results = []
    for i, b in enumerate(bins):
        w = Path(tempfile.mkdtemp(prefix="pc-waiting-"))
        s = Setup(w)
        try:
            binary, info = copy_binary(b, w)
            (w / "portcullis.toml").write_text(
                single_pool_config(w, FRONT, CONSOLE, BACKEND, settings="request_timeout = 60\n"))
            start_checked(s, "backend", [str(binary), "demo-app", "--port", str(BACKEND)], pin=0, port=BACKEND)
            p = start_checked(s, "portcullis", [str(binary), "run", "-c", str(w / "portcullis.toml")], pin=1, port=FRONT)
            res = asyncio.run(measure(p.pid, a.requests, a.ms))
        finally:
            s.stop()
            shutil.rmtree(w, ignore_errors=True)
        res["binary"] = info
        if res["answers"] != {"200": a.requests}:
            raise SystemExit(f"{b}: not every answer was a 200: {res['answers']}")
        res["heap_per_waiting_request_bytes"] = round((res["waiting"]["anon"] - res["before"]["anon"]) / a.requests)
        results.append(res)
        mib = lambda v: v / 2**20  # noqa: E731
        print(f"{b}: heap (RssAnon) {mib(res['before']['anon']):.1f} -> {mib(res['waiting']['anon']):.1f} MiB with "
              f"{a.requests} waiting ({res['heap_per_waiting_request_bytes']:,} B each); fds {res['fds_before']} -> "
              f"{res['fds_waiting']}; answers {res['answers']}", flush=True)
    doc = {"machine": machine(), "requests": a.requests, "ms": a.ms, "results": results}
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print(f"\nwritten: {a.out}")


if __name__ == "__main__":
    main()
