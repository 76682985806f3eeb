# An independent model of Serf's Snapshotter.replay() (serf/snapshot.go), plus Strata's one
# deviation (alive:/not-alive: names that are not UTF-8 are skipped with a warning).
# Written from the Go source; does not use or consult the Rust code.
import json, sys

U64_MAX = 2**64 - 1

def parse_uint(b):
    # strconv.ParseUint(s, 10, 64)
    if len(b) == 0 or any(c not in b"0123456789" for c in b):
        return None
    v = int(b.decode("ascii"))
    return v if v <= U64_MAX else None

def is_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False

def replay(data, rejoin):
    alive, clocks, warnings = {}, {"clock": 0, "event": 0, "query": 0}, []
    last_nl = data.rfind(b"\n")
    complete, torn = (data[: last_nl + 1], data[last_nl + 1 :]) if last_nl >= 0 else (b"", data)
    lines = complete.split(b"\n")[:-1]
    def warn(i, line):
        warnings.append({"line": i, "text": line.decode("utf-8", "replace")})
    for i, line in enumerate(lines, 1):
        if line.startswith(b"alive: "):
            info = line[len(b"alive: "):]
            idx = info.rfind(b" ")
            if idx == -1:
                warn(i, line); continue
            name, addr = info[:idx], info[idx + 1:]
            if not is_utf8(name):
                warn(i, line); continue
            alive[name.decode()] = addr.decode()
        elif line.startswith(b"not-alive: "):
            name = line[len(b"not-alive: "):]
            if not is_utf8(name):
                warn(i, line); continue
            alive.pop(name.decode(), None)
        elif any(line.startswith(p) for p in (b"clock: ", b"event-clock: ", b"query-clock: ")):
            key, _, val = line.partition(b": ")
            v = parse_uint(val)
            if v is None:
                warn(i, line); continue
            clocks[{b"clock": "clock", b"event-clock": "event", b"query-clock": "query"}[key]] = v
        elif line.startswith(b"coordinate: "):
            continue
        elif line == b"leave":
            if rejoin:
                continue
            alive = {}
            clocks = {"clock": 0, "event": 0, "query": 0}
        elif line.startswith(b"#"):
            pass
        else:
            warn(i, line)
    return {
        "alive": alive,
        "last_clock": clocks["clock"],
        "last_event_clock": clocks["event"],
        "last_query_clock": clocks["query"],
        "warnings": warnings,
        "torn_tail_bytes": len(torn),
    }

def expected(data):
    return {"rejoin_false": replay(data, False), "rejoin_true": replay(data, True)}

if __name__ == "__main__":
    # Compare the model with hand-written expectations: model.py check FILE.snap...
    bad = 0
    for snap in sys.argv[1:]:
        data = open(snap, "rb").read()
        want = json.load(open(snap[: -len(".snap")] + ".expected.json"))
        got = expected(data)
        if got != want:
            bad += 1
            print("MISMATCH", snap)
            print(" model:", json.dumps(got))
            print(" hand: ", json.dumps(want))
    print("checked", len(sys.argv) - 1, "mismatches", bad)
