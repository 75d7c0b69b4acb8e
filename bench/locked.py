"""Locked (atomic read-modify-write) instructions per request, from a callgrind
dump made with `--dump-instr=yes --dump-line=no --compress-pos=no
--compress-strings=no` (docs/benchmarks.md §2).

Why: an instruction with a `lock` prefix (an atomic add, swap or
compare-and-swap: Arc and waker reference counts, mutexes, atomic counters)
costs about 5 ns on the benchmark VM where a plain add costs a fraction of
one, and callgrind's instruction count weighs it like any other. So the count
of instructions says how much work a request is, and this says how many of
them are the expensive kind and where they are.

How: callgrind gives the number of times each instruction address ran, per
object file, at the object's own addresses (those `objdump` shows, for the
position-independent binary and the shared libraries alike); `objdump -d`
says which of those instructions are locked (a `lock` prefix, or `xchg`
with a memory operand, which is locked without one).
"""
import collections, re, subprocess

# One instruction in `objdump -d --no-show-raw-insn` output: "  1234:\tlock cmpxchg %rcx,(%rdx)".
INSN = re.compile(r"^\s*([0-9a-f]+):\s+(.*)$")
SYMBOL = re.compile(r"^[0-9a-f]+ <(.*)>:$")


def locked_addresses(path):
    """{file address: (mnemonic text, symbol)} of the locked instructions of `path`."""
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", path],
                          capture_output=True, text=True).stdout
    found, symbol = {}, "?"
    for line in text.splitlines():
        m = SYMBOL.match(line)
        if m:
            symbol = m.group(1)
            continue
        m = INSN.match(line)
        if not m:
            continue
        insn = m.group(2).strip()
        if insn.startswith("lock ") or (insn.startswith("xchg") and "(" in insn):
            found[int(m.group(1), 16)] = (insn.split()[0] + " " + insn.split()[1] if insn.startswith("lock ")
                                          else insn.split()[0], symbol)
    return found


def executions(dump_path):
    """{object path: {runtime address: times run}} from an uncompressed
    instruction-level callgrind dump (call lines' inclusive costs skipped)."""
    per = collections.defaultdict(collections.Counter)
    ob = None
    skip_next = False
    with open(dump_path) as f:
        for line in f:
            if skip_next:
                skip_next = False
                continue
            if line.startswith("ob="):
                ob = line[3:].strip()
            elif line.startswith("calls="):
                skip_next = True
            elif line.startswith("0x") and ob:
                addr, _, cost = line.partition(" ")
                if cost.strip():
                    per[ob][int(addr, 16)] += int(cost.split()[0])
    return per


def count(dump_path, requests, top=15):
    """(locked instructions per request, [(per request, mnemonic, symbol)] of
    the `top` sites)."""
    total = 0
    sites = collections.Counter()
    for ob, addrs in executions(dump_path).items():
        locked = locked_addresses(ob)
        for addr, n in addrs.items():
            hit = locked.get(addr)
            if hit:
                total += n
                sites[hit] += n
    rows = [(n / requests, insn, sym) for (insn, sym), n in sites.most_common(top)]
    return total / requests, rows
