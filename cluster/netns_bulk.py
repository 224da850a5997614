#!/usr/bin/env python3
"""One bulk TCP transfer, to check an emulated link's rate (netns-launch.sh --measure).

  netns_bulk.py recv HOST PORT          accept one connection, read to EOF, print one JSON line
  netns_bulk.py send HOST PORT BYTES    connect (retrying up to 10 s), send BYTES, close

The receiver's clock starts after the first chunk has arrived and stops at EOF, and the
rate counts only the bytes in between, so connection setup and the shaper's initial
burst of tokens do not inflate it.
"""
import json
import socket
import sys
import time

CHUNK = 1 << 16


def receive(host: str, port: int) -> None:
    with socket.create_server((host, port)) as server:
        server.settimeout(30)
        conn, _ = server.accept()
    with conn:
        conn.settimeout(120)
        buf = bytearray(CHUNK)
        first = conn.recv_into(buf)
        start = time.monotonic()
        rest = 0
        while (n := conn.recv_into(buf)) > 0:
            rest += n
        seconds = time.monotonic() - start
    print(json.dumps({
        "bytes": first + rest,
        "timedBytes": rest,
        "seconds": round(seconds, 6),
        "mbitPerSecond": round(rest * 8 / seconds / 1e6, 2) if seconds > 0 else None,
    }))


def send(host: str, port: int, size: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    payload = b"\0" * CHUNK
    with conn:
        conn.settimeout(120)
        left = size
        while left > 0:
            conn.sendall(payload[:min(left, CHUNK)])
            left -= min(left, CHUNK)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # returns when the receiver has read everything and closed


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "recv":
        receive(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 5 and sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
