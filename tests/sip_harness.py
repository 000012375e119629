"""Two SIP endpoints joined by an in-memory link in virtual time (no sockets)."""

from __future__ import annotations

from collections.abc import Callable

from ripp_sip import SipEndpoint, SipEvent

A = ("10.0.0.1", 5060)
B = ("10.0.0.2", 5070)


class SipPair:
    """Delivers what each endpoint sends to the other; ``drop`` filters datagrams."""

    def __init__(self, **kwargs: object) -> None:
        self.a = SipEndpoint(A, seed=1, **kwargs)  # type: ignore[arg-type]
        self.b = SipEndpoint(B, seed=2, **kwargs)  # type: ignore[arg-type]
        self.now = 0.0
        self.events: dict[str, list[SipEvent]] = {"a": [], "b": []}
        self.wire: list[tuple[str, bytes]] = []
        self.drop: Callable[[str, bytes], bool] = lambda side, data: False

    def _flush(self) -> bool:
        moved = False
        for name, src, dst in (("a", self.a, self.b), ("b", self.b, self.a)):
            for data, addr in src.datagrams_to_send():
                moved = True
                self.wire.append((name, data))
                if addr != dst.local or self.drop(name, data):
                    continue
                dst.receive_datagram(data, src.local, self.now)
            while (event := src.next_event()) is not None:
                self.events[name].append(event)
        return moved

    def settle(self) -> None:
        """Deliver until nothing moves (no time passes)."""
        while self._flush():
            pass

    def advance(self, seconds: float) -> None:
        """Run timers in virtual time for ``seconds``, delivering as we go."""
        end = self.now + seconds
        self.settle()
        while True:
            deadlines = [t for t in (self.a.get_timer(), self.b.get_timer()) if t is not None]
            if not deadlines or min(deadlines) > end:
                break
            self.now = max(self.now, min(deadlines))
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
            self.settle()
        self.now = end

    def sent(self, side: str, start: str) -> list[bytes]:
        """Datagrams ``side`` sent whose first line starts with ``start``."""
        return [d for s, d in self.wire if s == side and d.startswith(start.encode())]
