#!/usr/bin/env python3
"""agent.py: how the HA test's driver (VM "a") has VM "b" do things.

  agent.py serve ADDR PORT SCRIPT   run `bash SCRIPT ARGS...` for each
                                    request, one at a time, and answer its
                                    exit status and output
  agent.py call ADDR PORT ARGS...   send ARGS (and standard input) to the
                                    agent, print its output, exit with its
                                    status (255 when it cannot be reached)

One request per TCP connection: a JSON line {"args": [...], "stdin": "..."}
and back a JSON line {"rc": N, "out": "..."}. Only the test network
(10.99.0.0/24, inside the test VMs) carries it.
"""

import json
import socket
import subprocess
import sys


def serve(addr, port, script):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, int(port)))
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        with conn, conn.makefile("rwb") as f:
            try:
                req = json.loads(f.readline())
                res = subprocess.run(
                    ["bash", script] + [str(a) for a in req["args"]],
                    input=req.get("stdin", "").encode(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
                answer = {"rc": res.returncode, "out": res.stdout.decode(errors="replace")}
            except (ValueError, KeyError, OSError) as e:
                answer = {"rc": 254, "out": f"agent: bad request: {e}\n"}
            try:
                f.write((json.dumps(answer) + "\n").encode())
                f.flush()
            except OSError:
                pass
            # The script may have been "poweroff": nothing after it matters.


def call(addr, port, args):
    data = "" if sys.stdin.isatty() else sys.stdin.read()
    try:
        with socket.create_connection((addr, int(port)), timeout=10) as s:
            s.settimeout(None)
            with s.makefile("rwb") as f:
                f.write((json.dumps({"args": args, "stdin": data}) + "\n").encode())
                f.flush()
                line = f.readline()
    except OSError as e:
        print(f"agent: cannot reach {addr}:{port}: {e}", file=sys.stderr)
        return 255
    if not line:
        print(f"agent: {addr}:{port} closed without an answer", file=sys.stderr)
        return 255
    answer = json.loads(line)
    sys.stdout.write(answer["out"])
    return answer["rc"]


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) >= 4 and sys.argv[1] == "call":
        sys.exit(call(sys.argv[2], sys.argv[3], sys.argv[4:]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
