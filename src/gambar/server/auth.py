"""Who is asking: the optional bearer token, and the client identity the fair queue uses.

A client is its token if it sends one, else its X-Client-Id header within its address, else its
address. The fair queue takes turns between groups first, a group being the token or the address
(see `fairness_group`), so an X-Client-Id only splits its own address's turn and share and a
client that rotates ids gains nothing. Tokens are never stored or logged: the queue knows a client
by a hash of its token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from fastapi import Request

from gambar.server.errors import ApiError

CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
OPEN_PATHS = frozenset({"/api/health"})  # reachable without a token (load balancers, probes)
# A URL handed to an OpenAI client (response_format=url) must open without a header, so it
# carries a signature derived from the server's token instead.
SIGNED_PATH = re.compile(r"^/api/jobs/([0-9a-f]{32})/images/[0-9]+\.png$")
# Browsers answer a Basic challenge with a login box, so the page works behind a token too:
# any user name, the token as password.
CHALLENGE = 'Bearer realm="gambar", Basic realm="gambar", charset="UTF-8"'


def presented_token(request: Request) -> str | None:
    """The token in `Authorization: Bearer T` or `Basic base64(user:T)`, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        password = decoded.partition(":")[2]
        return password or None
    return None


def token_valid(token: str | None, tokens: tuple[str, ...]) -> bool:
    """Constant-time comparison against every configured token."""
    if token is None:
        return False
    given = token.encode()
    return any(hmac.compare_digest(given, t.encode()) for t in tokens)


def sign(job_id: str, tokens: tuple[str, ...]) -> str:
    """The signature that opens a job's image URLs without a header ('' without tokens)."""
    if not tokens:
        return ""
    return hmac.new(tokens[0].encode(), job_id.encode(), hashlib.sha256).hexdigest()[:32]


def signed_url_ok(request: Request, tokens: tuple[str, ...]) -> bool:
    """True for an image URL whose ?sig= matches its job."""
    match = SIGNED_PATH.match(request.url.path)
    sig = request.query_params.get("sig", "")
    if match is None or not sig:
        return False
    # Bytes: compare_digest refuses str with non-ASCII characters (a crafted ?sig= would be a 500).
    return hmac.compare_digest(sig.encode(), sign(match.group(1), tokens).encode())


def authorized(request: Request, tokens: tuple[str, ...]) -> bool:
    """Whether `request` may proceed: no tokens configured, an open path, or a valid token."""
    if not tokens or request.url.path in OPEN_PATHS:
        return True
    return token_valid(presented_token(request), tokens) or signed_url_ok(request, tokens)


def client_key(request: Request) -> str:
    """The identity the fair queue serves in turn (a FastAPI dependency).

    'token:<hash>', 'addr:<host>' or 'addr:<host>/id:<X-Client-Id>'.
    """
    token = presented_token(request)
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    address = "addr:" + (request.client.host if request.client else "unknown")
    claimed = request.headers.get("x-client-id")
    if claimed is not None:
        if not CLIENT_ID.fullmatch(claimed):
            raise ApiError(422, "X-Client-Id must be 1 to 64 letters, digits, '.', '_' or '-'")
        return f"{address}/id:{claimed}"
    return address


def fairness_group(client: str) -> str:
    """The group whose turn and share a client key uses: its token, or its address."""
    return client.partition("/")[0]
