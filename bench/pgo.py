"""Builds portcullis with profile-guided optimization (see docs/benchmarks.md §6).

Three steps, each with its own target directory so the plain release build in
target/release is not touched:
  1. an instrumented build (`-Cprofile-generate`) in target/pgo/gen;
  2. training: that binary runs every scenario of run.py for --seconds each,
     in front of the harness's nginx backend, and writes its counts on exit;
  3. `llvm-profdata merge`, then the optimized build (`-Cprofile-use`) in
     target/pgo/use. Its binary is target/pgo/use/release/portcullis.

llvm-profdata comes from rustup's llvm-tools component (the same LLVM as
rustc; the distribution's llvm-profdata reads an older profile format); the
script adds the component when it is missing. About 7 minutes on 2 cores.

The profile is the harness's own traffic (HTTP/1.1 keep-alive with and without
a browser's fields, one connection, a 1 MiB body, a new connection per
request, TLS and HTTP/2): the hot paths of a gateway's ordinary traffic. Code
the training never runs (errors, the console, the app host) is laid out as
cold, which costs it nothing in behaviour: PGO changes layout, inlining and
branch order, never what the code does.
"""
import argparse, hashlib, os, shutil, subprocess, sys
from pathlib import Path

import run

ROOT = run.ROOT
PGO = ROOT / "target/pgo"
BIN = run.PGO_BIN


def llvm_profdata():
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
    host = next(l.split(": ", 1)[1] for l in subprocess.run(["rustc", "-vV"], capture_output=True, text=True,
                                                              check=True).stdout.splitlines() if l.startswith("host: "))
    tool = Path(sysroot) / "lib/rustlib" / host / "bin/llvm-profdata"
    if not tool.exists():
        subprocess.run(["rustup", "component", "add", "llvm-tools"], check=True)
    return tool


def build(target_dir, rustflags):
    env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir), RUSTFLAGS=rustflags)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "portcullis"], cwd=ROOT, env=env, check=True)


def train(binary, seconds):
    """Runs every run.py scenario against `binary` for `seconds` each."""
    w, s = run.backend_setup("pc-pgo-")
    try:
        s.start("portcullis", [str(binary), "run", "-c", str(w / "portcullis.toml")], pin=1,
                port=run.PORTS["portcullis"])
        for name, (_, fn) in run.SCENARIOS.items():
            res = fn(run.TARGETS["portcullis"], seconds)
            print(f"  trained {name}: {res['requests']} requests", flush=True)
    finally:
        # SIGTERM: portcullis returns from main and the profile runtime writes its counts.
        s.stop()
        shutil.rmtree(w, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=3, help="training time per scenario")
    a = ap.parse_args()
    profdata = llvm_profdata()
    raw = PGO / "profiles"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir(parents=True)
    print("pgo: instrumented build (target/pgo/gen)", flush=True)
    build(PGO / "gen", f"-Cprofile-generate={raw}")
    # The build scripts of dependencies were instrumented too and wrote profiles
    # while building: only the training's count.
    for p in raw.iterdir():
        p.unlink()
    print("pgo: training", flush=True)
    train(PGO / "gen/release/portcullis", a.seconds)
    merged = PGO / "merged.profdata"
    subprocess.run([str(profdata), "merge", "-o", str(merged), str(raw)], check=True)
    # Named by its contents: cargo does not look at the file a flag names, so a new
    # profile under the old name would leave every crate built with the old one.
    digest = hashlib.sha256(merged.read_bytes()).hexdigest()[:16]
    for old in PGO.glob("merged-*.profdata"):
        old.unlink()
    merged = merged.rename(PGO / f"merged-{digest}.profdata")
    print("pgo: optimized build (target/pgo/use)", flush=True)
    build(PGO / "use", f"-Cprofile-use={merged}")
    print(BIN)


if __name__ == "__main__":
    sys.exit(main())
