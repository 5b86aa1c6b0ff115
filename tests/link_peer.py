"""Another Ableton Link peer, in a process of its own (``python link_peer.py TEMPO QUANTUM``).

It samples its session timeline every 2 ms. Commands on stdin, one per line:

* ``tempo BPM`` -- set the session's tempo (every peer takes it); answers ``ok``.
* ``state`` -- answers ``ok PEERS TEMPO``.
* ``samples`` -- answers one JSON line: ``[[time_us, beat], ...]`` since the start,
  Link's clock and the session's beat (at the quantum).
* ``quit``
"""

from __future__ import annotations

import json
import sys
import threading

from link import Link


def main() -> None:
    tempo, quantum = float(sys.argv[1]), float(sys.argv[2])
    link = Link(tempo)
    link.enabled = True
    samples: list[tuple[int, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.002):
            now = link.clock().micros()
            samples.append((now, link.captureAppSessionState().beatAtTime(now, quantum)))

    threading.Thread(target=sample, daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "tempo":
            state = link.captureAppSessionState()
            state.setTempo(float(args[0]), link.clock().micros())
            link.commitAppSessionState(state)
            print("ok", flush=True)
        elif cmd == "state":
            print("ok", link.numPeers(), link.captureAppSessionState().tempo(), flush=True)
        elif cmd == "samples":
            print(json.dumps(list(samples)), flush=True)
        elif cmd == "quit":
            break
    stop.set()
    link.enabled = False


if __name__ == "__main__":
    main()
