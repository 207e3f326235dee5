#!/usr/bin/env python3
"""A stand-in for systemd's notify socket (sd_notify), for VM tests.

notify-socket.py SOCKET LOG: binds a unix datagram socket at SOCKET with
SO_PASSCRED, as systemd does, and appends one line per message to LOG:
`<CLOCK_REALTIME µs> pid=<sender pid> <KEY=VALUE> <KEY=VALUE> ...`. The pid
comes from the kernel (SCM_CREDENTIALS), not from the message, so a test
can tell which process sent what. Runs until killed.
"""

import os
import socket
import struct
import sys
import time


def main() -> None:
    path, log_path = sys.argv[1], sys.argv[2]
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(path)
    creds_size = struct.calcsize("3i")
    with open(log_path, "a", buffering=1) as log:
        print(f"{time.time_ns() // 1000} pid={os.getpid()} LISTENING=1", file=log)
        while True:
            data, ancillary, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(creds_size))
            now_us = time.time_ns() // 1000
            pid = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid, _uid, _gid = struct.unpack("3i", payload[:creds_size])
            fields = " ".join(data.decode(errors="replace").split("\n")).strip()
            print(f"{now_us} pid={pid} {fields}", file=log)


if __name__ == "__main__":
    main()
