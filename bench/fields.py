"""Shows what each proxy of the throughput harness sends on: the fields its backend
gets and the fields its client gets, for one HTTP/1.1 and one HTTP/2 request
(HTTP/1.1 only for nginx-azurelog, which has no HTTP/2 listener), with run.py's
configurations, and checks that every proxy adds the same fields on the way
(docs/benchmarks.md section 1, "Every proxy forwards the same fields"); the `-bare`
peers, configured as before that, are shown, not checked.

    bash bench/run.sh fields     # installs the peers and curl, builds, then runs this (about 10 s)
    python3 bench/fields.py      # the same on a machine that has them; exits 1 if a proxy's
                                 # fields are not as portcullis's

The backend here is a small Python server on run.py's backend port that keeps every
request head it gets and answers each with a stand-in for run.py's backend answer (200,
a 6-byte body, nginx's fields) and an `x-transaction-id` of its own, which the
client must not get. Each request carries `Host: bench.example:8080`, an
`X-Forwarded-For: 192.0.2.7` of its own, forged values of the other five fields the
gateway sets, and a tag (`X-Fields-Check`) by which its head is told from the probes'.
The check: the backend's `X-Forwarded-For` values hold the client's list and then the
client (127.0.0.1), in one field or two; each forged value was replaced; and the
client got the same `x-transaction-id` the backend got.
"""
import shutil, socket, subprocess, sys, tempfile, threading, time
from pathlib import Path

import run

# The fields every proxy must send its backend (product spec section 4), and the one
# it must give its client.
TO_BACKEND = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
              "x-original-host", "x-transaction-id")
TO_CLIENT = ("x-transaction-id",)
# What the client sends of those fields itself: the gateway must replace each.
FORGED = {"x-forwarded-proto": "forged-proto", "x-forwarded-host": "forged.example",
          "x-forwarded-port": "1", "x-original-host": "forged.example",
          "x-transaction-id": "0123456789abcdef0123456789abcdef"}
PROXIES = ("portcullis", "portcullis-nolog", "nginx", "nginx-azurelog", "haproxy", "haproxy-nolog")
# The peers as the runs before the twenty-third session configured them: shown, not checked.
BARE = ("nginx-bare", "haproxy-bare")
ANSWER = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 04:00:00 GMT\r\nContent-Type: application/octet-stream\r\n"
          b"Content-Length: 6\r\nConnection: keep-alive\r\nx-transaction-id: from-the-backend\r\n\r\nhello\n")


class Backend:
    """Keeps the head of every request it gets (the last one in `heads`)."""

    def __init__(self, port):
        self.heads = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        buf = b""
        with c:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        more = c.recv(65536)
                    except OSError:
                        return
                    if not more:
                        return
                    buf += more
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.heads.append(head.decode("latin-1"))
                c.sendall(ANSWER)


def fields(head_text):
    """(name in lower case, value) of each field line of a head, in order."""
    out = []
    for line in head_text.split("\r\n")[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            out.append((name.strip().lower(), value.strip()))
    return out


def client_request(url, h2, tag):
    """The answer's fields, through curl (`--http2-prior-knowledge` for h2)."""
    argv = ["curl", "-s", "-o", "/dev/null", "-D", "-", "-H", "Host: bench.example:8080",
            "-H", "X-Forwarded-For: 192.0.2.7", "-H", f"X-Fields-Check: {tag}", url + "/"]
    for name, value in FORGED.items():
        argv[-1:-1] = ["-H", f"{name}: {value}"]
    if h2:
        argv.insert(1, "--http2-prior-knowledge")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise SystemExit(f"curl {url} failed (exit {done.returncode}): {done.stderr.strip()}")
    return fields(done.stdout.replace("\n", "\r\n").replace("\r\r\n", "\r\n"))


def main():
    work, setup = None, None
    backend = Backend(run.PORTS["backend"])
    try:
        work = Path(tempfile.mkdtemp(prefix="pc-fields-"))
        work.chmod(0o755)
        run.write_configs(work)
        run.write_variant_config(work, "nolog", 'access_log = "off"')
        setup = run.Setup(work)
        for name in PROXIES + BARE:
            run.start_proxy(setup, work, name)
        missing = []
        for name in PROXIES + BARE:
            urls = run.TARGETS[name]
            for h2 in (False, True):
                if h2 and not urls.get("h2"):
                    continue
                label = f"{name} ({'HTTP/2' if h2 else 'HTTP/1.1'})"
                tag = f"{name}-{'h2' if h2 else 'h1'}"
                answer = client_request(urls["h2"] if h2 else urls["http"], h2, tag)
                deadline = time.time() + 5
                sent = []
                while not sent and time.time() < deadline:
                    sent = next((f for f in map(fields, list(backend.heads))
                                 if ("x-fields-check", tag) in f), [])
                    time.sleep(0.01)
                print(f"{label}\n  to the backend: " + "; ".join(f"{n}: {v}" for n, v in sent))
                print("  to the client:  " + "; ".join(f"{n}: {v}" for n, v in answer))
                names_sent = {n for n, _ in sent}
                names_answered = {n for n, _ in answer}
                gaps = [f"backend {n}" for n in TO_BACKEND if n not in names_sent]
                gaps += [f"client {n}" for n in TO_CLIENT if n not in names_answered]
                xff = ", ".join(v for n, v in sent if n == "x-forwarded-for")
                if xff.replace(" ", "") != "192.0.2.7,127.0.0.1":
                    gaps.append(f"backend X-Forwarded-For {xff!r}")
                gaps += [f"backend {n} not replaced" for n, v in sent if FORGED.get(n) == v]
                ids_sent = [v for n, v in sent if n == "x-transaction-id"]
                ids_answered = [v for n, v in answer if n == "x-transaction-id"]
                if len(ids_answered) != 1 or ids_sent != ids_answered:
                    gaps.append(f"ids: backend {ids_sent}, client {ids_answered}")
                if gaps and name not in BARE:
                    missing.append(f"{label}: " + ", ".join(gaps))
        if missing:
            print("\nMISSING:\n  " + "\n  ".join(missing))
            return 1
        print("\nevery proxy sent the backend " + ", ".join(TO_BACKEND) + " and its client "
              + ", ".join(TO_CLIENT) + ": the client's X-Forwarded-For kept, then the client; the"
              " forged values replaced; one id, the backend's")
        return 0
    finally:
        if setup:
            setup.stop()
        backend.sock.close()
        if work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
