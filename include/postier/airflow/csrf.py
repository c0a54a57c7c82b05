"""CSRF tokens of the Postier forms: an HMAC of the signed-in login and the time it was issued.

A page embeds the token in its forms; a POST is accepted only with a token issued to the same
login less than `MAX_AGE` ago. Another site can make the browser send the Airflow cookie, but it
cannot read a page to learn the token, nor forge one without the server's key.
"""

from __future__ import annotations

import hashlib
import hmac
import time

MAX_AGE = 12 * 3600


def _mac(key: bytes, login: str, issued: int) -> str:
    return hmac.new(key, f"{login}\n{issued}".encode(), hashlib.sha256).hexdigest()


def issue(key: bytes, login: str, now: float | None = None) -> str:
    issued = int(now if now is not None else time.time())
    return f"{issued}.{_mac(key, login, issued)}"


def valid(key: bytes, login: str, token: str | None, now: float | None = None) -> bool:
    if not token or "." not in token:
        return False
    issued_text, mac = token.split(".", 1)
    if not issued_text.isdigit():
        return False
    issued = int(issued_text)
    age = (now if now is not None else time.time()) - issued
    return 0 <= age <= MAX_AGE and hmac.compare_digest(mac, _mac(key, login, issued))
