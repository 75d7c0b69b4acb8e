"""Live heap of portcullis under a load: how many bytes its allocations hold, by size class,
and which code holds the big blocks (docs/benchmarks.md section 5, "What held the heap").

RSS says how much memory the allocator holds, not how much of it portcullis uses: a
high-water mark the allocator keeps looks the same as a leak. This build tells them apart.

    python3 bench/heapstat.py build      # -> target/heapstat/release/portcullis (~3-8 min)
    HEAPSTAT_FILE=/tmp/heap.jsonl python3 bench/soak.py --minutes 4 \\
        --bin target/heapstat/release/portcullis --out /tmp/soak-heap.json
    python3 bench/heapstat.py report /tmp/heap.jsonl --soak /tmp/soak-heap.json

`build` copies the crate to target/heapstat/src, puts bench/heapstat_alloc.rs into its
main.rs as the global allocator (it needs `unsafe`, which the crate forbids, so it is never
part of the product) and builds it without whole-program LTO (same code, same allocator,
a faster build). That allocator counts every allocation's bytes by size class (powers of
two) and remembers the stack of each live block of 16 KiB or more; with HEAPSTAT_FILE set,
`portcullis run` writes the counts every second to that file and, every 30 s, the live big
blocks grouped by stack to HEAPSTAT_FILE.sites. Capturing a stack per big block slows the
gateway, and the stacks it keeps add to its RSS: read the live counts, not the RSS, of such
a run.

`report` prints the live bytes over time, the median of each size class in two windows of
the soak's measured phase (the windows of its RSS check, bench/common.py `rss_windows`; --soak
gives the phase's start and length), and the code holding the most big-block bytes in the
last dump (or the one nearest --at SECONDS of the phase); what the dump left out is one
line.
"""
import argparse, json, os, re, shutil, statistics, subprocess, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, rss_windows  # noqa: E402

WORK = ROOT / "target/heapstat"
# Frames of the allocator (heapstat_alloc.rs, at the top of the patched main.rs), the standard
# library's allocation paths and `bytes`' growth: skipped to find the code that asked for the block.
PLUMBING = re.compile(r"(/rustc/|/bytes-[0-9.]+/|src/main\.rs:)")


def build():
    src = WORK / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for name in ("Cargo.toml", "Cargo.lock"):
        shutil.copy2(ROOT / name, src / name)
    # The manifest names the e2e test's path; cargo checks that it exists.
    for d in ("src", "tests"):
        shutil.copytree(ROOT / d, src / d)
    main = (src / "src/main.rs").read_text()
    hook, run = "extern crate mimalloc;\n", "        Command::Run { config } => {\n"
    if main.count(hook) != 1 or main.count(run) != 1:
        raise SystemExit("src/main.rs no longer has the lines heapstat.py patches: update build()")
    main = main.replace(hook, hook + (ROOT / "bench/heapstat_alloc.rs").read_text())
    main = main.replace(run, run + "            heapstat::start();\n")
    (src / "src/main.rs").write_text(main)
    manifest = (src / "Cargo.toml").read_text().replace('unsafe_code = "forbid"', 'unsafe_code = "allow"')
    (src / "Cargo.toml").write_text(manifest)
    env = dict(os.environ, CARGO_TARGET_DIR=str(WORK), CARGO_PROFILE_RELEASE_LTO="false",
               CARGO_PROFILE_RELEASE_CODEGEN_UNITS="16")
    subprocess.run(["cargo", "build", "--release", "--bin", "portcullis"], cwd=src, env=env, check=True)
    print(f"built: {WORK / 'release/portcullis'}")


def load_counts(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def load_dumps(path):
    """The .sites file: [(t, unix, [(bytes, blocks, stack text)])]."""
    dumps = []
    for part in Path(path).read_text().split("=== ")[1:]:
        head, *groups = part.split("--- ")
        m = re.match(r"t=(\S+) unix=(\S+)", head)
        items = []
        for g in groups:
            first, _, stack = g.partition("\n")
            b = re.match(r"bytes=(\d+) blocks=(\d+)", first)
            items.append((int(b.group(1)), int(b.group(2)), stack))
        dumps.append((float(m.group(1)), float(m.group(2)), items))
    return dumps


def holder(stack, frames=3):
    """The first `frames` frames below the allocation plumbing, as name (file:line)."""
    if stack.strip() == "(other stacks)":
        return "(other stacks, fewer bytes each)"
    out, name = [], None
    for line in stack.splitlines():
        line = line.strip()
        m = re.match(r"\d+: (.*)", line)
        if m:
            name = m.group(1)
        elif name and line.startswith("at "):
            where = line[3:]
            if not PLUMBING.search(where):
                where = re.sub(r"^.*/registry/src/[^/]+/", "", where)
                where = re.sub(r"^.*/src/src/", "src/", where)
                out.append(f"{re.sub(r'<.*', '', name)} ({where})")
                if len(out) == frames:
                    break
            name = None
    return " <- ".join(out) or "?"


def report(a):
    rows = load_counts(a.file)
    length = a.length
    if a.soak:
        doc = json.loads(Path(a.soak).read_text())
        length = doc["minutes"] * 60
    if a.offset is not None:
        # Files written before the lines had wall-clock times: the phase's start in the
        # gateway's own seconds, given by hand.
        start, clock = a.offset, "t"
    elif a.soak:
        start, clock = doc["phase_started_unix"], "unix"
    else:
        start, clock = rows[0]["unix"], "unix"
    t = lambda r: r[clock] - start  # noqa: E731 - seconds into the measured phase
    total = lambda r: sum(r["live"])  # noqa: E731
    mib = 1 << 20
    print("live MiB every 20 s (seconds into the measured phase):")
    print("  " + " ".join(f"{t(r):.0f}:{total(r) / mib:.2f}" for r in rows[::20]))
    if length:
        ramp, win = rss_windows(length)
        first = [r for r in rows if ramp <= t(r) <= ramp + win]
        last = [r for r in rows if length - win <= t(r) <= length]
        if first and last:
            med = lambda sel, f: statistics.median(f(r) for r in sel)  # noqa: E731
            a0, a1 = med(first, total), med(last, total)
            print(f"\nlive, median of {ramp:.0f}-{ramp + win:.0f} s against {length - win:.0f}-{length:.0f} s: "
                  f"{a0 / mib:.2f} -> {a1 / mib:.2f} MiB ({(a1 - a0) / a0 * 100:+.1f} %)")
            print("by size class (bytes in [lower, 2 x lower)):")
            for i in range(len(rows[0]["live"])):
                b0, b1 = med(first, lambda r: r["live"][i]), med(last, lambda r: r["live"][i])
                if max(b0, b1) >= 64 * 1024:
                    n0, n1 = med(first, lambda r: r["count"][i]), med(last, lambda r: r["count"][i])
                    print(f"  {1 << max(i - 1, 0):>8} B  {b0 / 1024:9.1f} -> {b1 / 1024:9.1f} KiB  "
                          f"({(b1 - b0) / 1024:+8.1f})  blocks {n0:.0f} -> {n1:.0f}")
    sites = Path(str(a.file) + ".sites")
    dumps = load_dumps(sites) if sites.exists() else []
    if dumps:
        stamp = 0 if clock == "t" else 1
        at = min(dumps, key=lambda d: abs(d[stamp] - start - a.at)) if a.at is not None else dumps[-1]
        groups = {}
        for b, n, stack in at[2]:
            g = groups.setdefault(holder(stack), [0, 0])
            g[0] += b
            g[1] += n
        print(f"\nlive blocks of 16 KiB or more at {at[stamp] - start:.0f} s, by the code that asked for them:")
        for k, (b, n) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:a.top]:
            print(f"  {b / 1024:8.0f} KiB in {n:4d}  {k}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build")
    r = sub.add_parser("report")
    r.add_argument("file", help="the HEAPSTAT_FILE of the run")
    r.add_argument("--soak", help="bench/soak.py's result file of the same run (phase start and length)")
    r.add_argument("--at", type=float, help="the big-block dump nearest this second of the phase (default: the last)")
    r.add_argument("--offset", type=float,
                   help="the phase's start in the file's own seconds (`t`), for files without wall-clock times")
    r.add_argument("--length", type=float, help="the phase's length, seconds, without --soak")
    r.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    build() if a.cmd == "build" else report(a)


if __name__ == "__main__":
    main()
