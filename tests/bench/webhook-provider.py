#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A trivial photon provider for the webhook benchmark: serves every method of one photon from one connection to
photond's control socket, answering each invoke at once with {"ok": true}.

    tests/bench/webhook-provider.py [--socket PATH] [--photon bench]
"""

import argparse
import json
import os
import socket
import sys


def main():
    home = os.environ.get("PHOTON_HOME") or os.path.join(os.environ["HOME"], ".photon")
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", default=os.path.join(home, ".data", "daemon.sock"))
    ap.add_argument("--photon", default="bench")
    args = ap.parse_args()

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(args.socket)
    s.sendall(json.dumps({"type": "provide", "id": "provide-1", "photonName": args.photon}).encode() + b"\n")

    buf = b""
    while True:
        data = s.recv(1 << 16)
        if not data:
            return 0
        buf += data
        lines = buf.split(b"\n")
        buf = lines.pop()
        out = []
        for line in lines:
            if not line:
                continue
            msg = json.loads(line)
            if msg.get("type") == "invoke":
                out.append(b'{"type":"invoke_result","id":"%s","success":true,"data":{"ok":true}}\n'
                           % msg["id"].encode())
            elif msg.get("id") == "provide-1":
                if msg.get("type") == "error" or msg.get("success") is False:
                    print("provide failed:", line.decode(), file=sys.stderr)
                    return 1
                print("providing", args.photon, file=sys.stderr, flush=True)
        if out:
            s.sendall(b"".join(out))


if __name__ == "__main__":
    sys.exit(main())
