"""Two clients in a process of their own (no share of the gateway's event loop or GIL), for
tests/test_validation_budget.py: `python -m tests.turns_client PORT FLOODER_TOKEN OTHER_TOKEN PACKETS`.

The flooder writes PACKETS QoS 1 data messages in one go, and the other client a PINGREQ right after.
Prints how many of the flooder's PUBACKs had arrived when the PINGRESP did: all of them when the
gateway handled the whole batch before it read anything else.
"""

from __future__ import annotations

import select
import socket
import sys

from .wire import connect_packet, publish_packet

PINGREQ, PINGRESP, PUBACK_SIZE = b"\xc0\x00", b"\xd0\x00", 4
SAMPLES = b'[{"v":[' + b",".join([b"1e-100"] * 280) + b"]}]"
"""2 KB: a batch of 31 fits one TCP segment on loopback, so it is all read at once. Its three-digit
exponents make each value looked at: a packet of some cost even after issue 17."""


def _connected(port: int, client_id: str, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(connect_packet(client_id, token))
    connack = _exactly(sock, 4)
    assert connack[3] == 0, connack
    return sock


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def main(port: int, flooder_token: str, other_token: str, packets: int) -> int:
    flooder = _connected(port, "flooder", flooder_token)
    other = _connected(port, "other", other_token)
    topic = f"kp1/v1/dcx/{flooder_token}/json"
    flooder.sendall(b"".join(publish_packet(topic, SAMPLES, packet_id=i) for i in range(1, packets + 1)))
    other.sendall(PINGREQ)
    received = 0  # bytes of PUBACKs
    while True:
        readable, _, _ = select.select([other, flooder], [], [], 10)
        if not readable:
            raise TimeoutError("no PINGRESP")
        if other in readable:
            assert _exactly(other, 2) == PINGRESP
            flooder.setblocking(False)
            try:  # what had arrived by now
                while chunk := flooder.recv(65_536):
                    received += len(chunk)
            except BlockingIOError:
                pass
            return received // PUBACK_SIZE
        received += len(flooder.recv(65_536))


if __name__ == "__main__":
    print(main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])), flush=True)
