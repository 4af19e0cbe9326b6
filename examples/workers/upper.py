"""A command-pool worker in Python: answers each request with its text upper-cased.

    {"id":7,"data":"hello"}  ->  {"id":7,"result":"HELLO"}
    {"id":8,"data":42}       ->  {"id":8,"error":"data must be a string, not int"}
    {"id":9,"ping":true}     ->  {"id":9,"result":"pong"}

It reads one JSON request per line on stdin, answers each in order with one JSON line on
stdout (flushed at once), logs to stderr, and exits at end of file. See docs/worker-protocol.md.
"""

import json
import sys


def handle(data: object) -> dict[str, object]:
    if not isinstance(data, str):
        return {"error": f"data must be a string, not {type(data).__name__}"}
    return {"result": data.upper()}


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("ping"):
            answer: dict[str, object] = {"result": "pong"}
        else:
            answer = handle(request.get("data"))
        sys.stdout.write(json.dumps({"id": request["id"], **answer}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
