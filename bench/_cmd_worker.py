"""The command-pool worker of ``python -m bench pools``: the trivial Python JSON-lines worker.

Requests carry ``[task, x]``: ``noop`` answers ``x``; ``busy1ms`` spins on
``time.perf_counter()`` for 1 ms first, as bench.pools.busy1ms does. Pings get ``"pong"``.
"""

import json
import sys
import time


def main() -> None:
    out = sys.stdout
    perf = time.perf_counter
    for line in sys.stdin:
        req = json.loads(line)
        data = req.get("data")
        if data is not None and data[0] == "busy1ms":
            end = perf() + 1e-3
            while perf() < end:
                pass
        result = "pong" if data is None else data[1]
        out.write(json.dumps({"id": req["id"], "result": result}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
