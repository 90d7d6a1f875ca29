"""Signed webhook traffic for crash tests: posters that remember exactly what was acknowledged."""

from __future__ import annotations

import threading
import time

import httpx
import orjson

from app.demo import recipient_id
from app.security.webhook_auth import sign_header


class Poster(threading.Thread):
    """Posts one signed event at a time until told to stop or the server goes away; ``acked`` gets the
    id of every event answered 200 (only those must survive a crash)."""

    def __init__(
        self, url: str, name: str, acked: list[str], stop: threading.Event, secret: str, recipients: int = 10
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.prefix, self.acked, self.stop = url, name, acked, stop
        self.secret, self.recipients = secret, recipients

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            for n in range(100_000):
                if self.stop.is_set():
                    return
                event_id = f"{self.prefix}-{n}"
                body = orjson.dumps(
                    {
                        "id": event_id,
                        "type": "product.viewed",
                        "recipient": recipient_id(1 + n % self.recipients),
                        "occurred_at": "2024-05-01T10:00:00Z",
                        "payload": {"sku": f"sku-{n}"},
                    }
                )
                header = sign_header([self.secret], int(time.time()), body)
                try:
                    response = client.post(
                        self.url,
                        content=body,
                        headers={"content-type": "application/json", "opentime-signature": header},
                    )
                except httpx.TransportError:
                    return  # the server is gone: this event was never acknowledged
                if response.status_code == 200:
                    self.acked.append(event_id)


def wait_for_acks(acked: list[str], count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(acked) < count and time.monotonic() < deadline:
        time.sleep(0.005)
