"""Helpers shared by the reliability benchmarks (failover.py, idle.py, soak.py).

Process handling, port waiting and the child lookup come from run.py (the throughput
harness); this file adds what the reliability runs need on top: the portcullis binary
copy, /proc figures, the console API, and the access-log reader.
"""
import hashlib, json, os, resource, shutil, signal, subprocess, sys, time, urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, Setup, children, make_certificate, wait_port  # noqa: E402,F401  (re-exported)

TOKEN = "bench"


# The soak's measured phase's first minute is left out of the RSS check's first window: the
# loads start again after the idle pause that reads the baseline, and the allocator,
# which at its first allocations after the pause gives back what the warm-up's closed
# connections had held, takes it again. In the runs since the soak took on the HTTP/2
# and TLS loads, RSS fell to 11.2-11.8 MiB within the first 30 s (from the warm-up's
# idle reading of 19.2-20.3 MiB), and was back within 5 % of that reading at 52-58 s
# (at 98 s in one run; docs/benchmarks.md section 5). A first window over that climb measures
# the loads starting, not the gateway growing.
RSS_RAMP_S = 60.0


def rss_windows(dur):
    """(start of the first window, length of each window), seconds, for a phase of `dur`
    seconds: the first window is a fifth of the phase (at least 30 s) from RSS_RAMP_S on
    when the phase holds both windows after it, else from 0; the last is its last fifth.
    bench/soak.py's RSS check uses them, and bench/heapstat.py reads the live heap over them."""
    win = max(30.0, dur / 5)
    return (RSS_RAMP_S if dur >= RSS_RAMP_S + 2 * win else 0.0), win


def single_pool_config(w, front, console, backend, settings="", listener=""):
    """A portcullis config of one listener on 127.0.0.1:`front` routing everything to a pool of
    one address, 127.0.0.1:`backend`; the console on `console`, the state in `w`/state.
    `settings`: more lines of the backend HTTP settings; `listener`: more of the listener."""
    return f"""
[gateway]
state_dir = "{w}/state"
[console]
listen = "127.0.0.1:{console}"
token = "{TOKEN}"
[[listeners]]
name = "web"
listen = "127.0.0.1:{front}"
{listener}[[backend_pools]]
name = "pool"
addresses = ["127.0.0.1:{backend}"]
[[backend_http_settings]]
name = "s"
{settings}[[request_routing_rules]]
name = "r"
listener = "web"
priority = 1
backend_pool = "pool"
backend_http_settings = "s"
"""


def start_checked(setup, name, argv, pin=None, port=None):
    """Setup.start, then make sure the process itself is the one listening: if it exited
    (say the port was taken by someone else, whose socket wait_port then saw), raise."""
    p = setup.start(name, argv, pin=pin, port=port)
    time.sleep(0.1)
    if p.poll() is not None:
        err = (setup.work / f"{name}.err").read_text(errors="replace")[-300:]
        raise RuntimeError(f"{name} exited at start with {p.returncode}: {err.strip()}")
    return p


def tools_check(names):
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise SystemExit(f"missing tools: {' '.join(missing)} (bench/run.sh installs them with apt-get)")


def raise_nofile():
    """Raise the soft open-files limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def pin_self(core=0):
    try:
        os.sched_setaffinity(0, {core})
    except OSError:
        pass


def copy_binary(src, work):
    """Run a private copy: the lead may rebuild target/release/portcullis meanwhile."""
    src = Path(src).resolve()
    if not src.exists():
        raise SystemExit(f"{src} is missing: run `cargo build --release` first")
    dst = Path(work) / "portcullis"
    shutil.copy2(src, dst)
    h = hashlib.sha256(dst.read_bytes()).hexdigest()[:16]
    return dst, {"path": str(src), "sha256_16": h,
                 "mtime": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(src.stat().st_mtime)),
                 "git_head": git_head()}


def git_head():
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty-src" if dirty else "")
    except OSError:
        return "?"


def machine():
    return {"nproc": os.cpu_count(),
            "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?"),
            "kernel": os.uname().release, "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def rss_parts(pid):
    """VmRSS split as the kernel counts it: {"anon": RssAnon, "file": RssFile, "thp":
    AnonHugePages} in bytes (file = pages of mapped files, mostly the binary's code,
    shared and reclaimable; anon = the heap and stacks; thp = the part of anon in
    transparent huge pages, whose 2 MiB count whole however little of them is used:
    khugepaged collapsing them made the soak's RSS steps before portcullis's heap
    stopped asking for them), zeros if the process is gone."""
    parts = {"anon": 0, "file": 0, "thp": 0}
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("RssAnon:"):
                parts["anon"] = int(line.split()[1]) * 1024
            elif line.startswith("RssFile:"):
                parts["file"] = int(line.split()[1]) * 1024
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("AnonHugePages:"):
                parts["thp"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return parts


def rss(pid):
    """Resident set size in bytes (VmRSS), 0 if the process is gone."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


def signal_proc(p, sig):
    try:
        os.kill(p.pid, sig)
    except OSError:
        pass


def kill_and_reap(p, sig=signal.SIGKILL, timeout=10):
    signal_proc(p, sig)
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_proc(p, signal.SIGKILL)
        p.wait()


def api(console, method, path, body=None, timeout=30):
    req = urllib.request.Request(f"http://{console}{path}", method=method, data=body,
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        data = r.read()
        return r.status, (json.loads(data) if data else None)


def pc_cli(binary, console, *args, timeout=120):
    """`portcullis ARGS --api URL --token T`; returns (exit code, output)."""
    out = subprocess.run([str(binary), *args, "--api", f"http://{console}", "--token", TOKEN],
                         capture_output=True, text=True, timeout=timeout)
    return out.returncode, (out.stdout + out.stderr).strip()


def wait_app_ready(console, app, n, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            _, a = api(console, "GET", f"/api/apps/{app}")
            if a.get("ready_instances", 0) >= n and a.get("state") == "Running":
                return a
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"app {app} did not get {n} ready instances within {timeout}s")


# ---- portcullis access log -------------------------------------------------------------------

def read_access_log(path):
    recs = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        recs.append(json.loads(line))
                    except ValueError:
                        recs.append({"unparsable": line[:200]})
    except OSError:
        pass
    return recs


def rid_of(rec):
    uri = rec.get("properties", {}).get("originalRequestUriWithArgs", "")
    for part in uri.split("?", 1)[-1].split("&"):
        if part.startswith("rid="):
            try:
                return int(part[4:])
            except ValueError:
                return None
    return None


def brief(rec):
    """The fields of a record that explain a failure."""
    p = rec.get("properties", {})
    return {k: p.get(k) for k in ("timeStamp", "httpMethod", "originalRequestUriWithArgs", "httpStatus", "error_info",
                                   "serverRouted", "serverStatus", "serverResponseLatency", "timeTaken",
                                   "connectionReused", "attempts", "transactionId")} | {"timeStamp": rec.get("timeStamp")}


def summarize_access_log(recs, samples=8):
    """Counts of non-success records by (status, error_info), requests saved by a retry, samples."""
    errors = Counter()
    retried_ok = Counter()
    sample = []
    for r in recs:
        p = r.get("properties", {})
        ei = p.get("error_info", "")
        att = p.get("attempts", []) or []
        if ei != "ERRORINFO_NO_ERROR":
            errors[f"{p.get('httpStatus')} {ei}"] += 1
            if len(sample) < samples:
                sample.append(brief(r))
        elif len(att) > 1:
            retried_ok[" -> ".join(a.get("error_info", "?").replace("ERRORINFO_", "") for a in att)] += 1
    return {"records": len(recs), "errors": dict(errors), "answered_after_retry": dict(retried_ok),
            "error_samples": sample}


def log_lines_summary(path, limit=12, keep=160):
    """Most frequent lines of a text log, with numbers and addresses blanked (nginx / haproxy)."""
    import re
    c = Counter()
    try:
        for line in open(path, errors="replace"):
            line = re.sub(r"^\S+ \S+ ", "", line.strip())  # time stamp
            line = re.sub(r"\d+", "N", line)
            c[line[:keep]] += 1
    except OSError:
        return {}
    return dict(c.most_common(limit))
