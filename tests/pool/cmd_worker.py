"""A command-pool worker for the tests: what it does is chosen by the request's data.

    {"echo": x}         answer x                 {"error": e}      answer with error e
    {"garbage": true}   write a line of non-JSON {"wrong_id": true} answer another id
    {"exit": code}      exit at once             {"sleep": s}      sleep, then answer "slept"
    {"stderr": text}    write text to stderr     {"alloc": mb}     hold mb MiB, answer the pid
    {"pid": true}       answer the pid           {"spawn": file}   start a child, write its pid

Pings get "pong", unless CMD_WORKER_IGNORE_PINGS is set: then they get no answer at all.
"""

import json
import os
import subprocess
import sys
import time

held = []


def main() -> None:
    ignore_pings = bool(os.environ.get("CMD_WORKER_IGNORE_PINGS"))
    out = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        rid = req["id"]
        if req.get("ping"):
            if not ignore_pings:
                out.write(json.dumps({"id": rid, "result": "pong"}) + "\n")
                out.flush()
            continue
        data = req["data"]
        answer: dict = {"id": rid}
        if "echo" in data:
            answer["result"] = data["echo"]
        elif "error" in data:
            answer["error"] = data["error"]
        elif "garbage" in data:
            out.write("this is not json\n")
            out.flush()
            continue
        elif "wrong_id" in data:
            answer = {"id": rid + 1000, "result": None}
        elif "exit" in data:
            os._exit(data["exit"])
        elif "sleep" in data:
            time.sleep(data["sleep"])
            answer["result"] = "slept"
        elif "stderr" in data:
            sys.stderr.write(data["stderr"] + "\n")
            sys.stderr.flush()
            answer["result"] = "logged"
        elif "alloc" in data:
            held.append(bytearray(data["alloc"] << 20))
            answer["result"] = os.getpid()
        elif "pid" in data:
            answer["result"] = os.getpid()
        elif "spawn" in data:
            child = subprocess.Popen(["sleep", "60"])
            with open(data["spawn"], "w") as f:
                f.write(str(child.pid))
            time.sleep(60)
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
