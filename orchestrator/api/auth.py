"""Signing in: one token cache per deployment, and one way to fill it.

A token is asked for by a request that already holds its request slot: used while it is before its
renewal time, otherwise renewed there and then (one `generateToken`, in that same slot), so a token
bought is always used at once, however long the request queued. One sign-in at a time per deployment;
refused credentials are final, never retried into a locked account.
"""

from __future__ import annotations

from typing import Final

import anyio

from orchestrator.api.answers import Grant, read_grant, refused_sign_in
from orchestrator.api.transport import Link
from orchestrator.clock import Clock
from orchestrator.errors import TargetError
from orchestrator.model import Deployment
from orchestrator.redact import remember_token

SIGN_IN_PATH: Final = "/sharing/rest/generateToken"


class TokenCache:
    """The deployment's current token."""

    def __init__(self, deployment: Deployment, token_minutes: int, clock: Clock) -> None:
        self._deployment = deployment
        self._token_minutes = token_minutes
        self._clock = clock
        self._grant: Grant | None = None
        # Set while a sign-in is under way; made only then: a lock per deployment, idle but for one sign-in a
        # night, cost a 10,000-deployment run 7 MB.
        self._signing_in: anyio.Event | None = None

    async def token(self, link: Link) -> str:
        """The cached token, or a new one signed in for within the request slot the caller holds."""
        grant = self._fresh()
        while grant is None:
            signing_in = self._signing_in
            if signing_in is not None:
                # One sign-in at a time: another request of this deployment waits here holding its slot, for at
                # most one sign-in. No deadlock: the sign-in uses the slot its own request holds, never another.
                await signing_in.wait()
                grant = self._fresh()  # None if that sign-in failed: this request tries its own
                continue
            signing_in = self._signing_in = anyio.Event()
            try:
                grant = await self._sign_in(link)
            finally:
                self._signing_in = None
                signing_in.set()
        return grant.token

    def discard(self, token: str) -> None:
        """The server refused `token` (expired or revoked): the next request signs in again, unless another
        has renewed it meanwhile."""
        if self._grant is not None and self._grant.token == token:
            self._grant = None

    def _fresh(self) -> Grant | None:
        grant = self._grant
        return grant if grant is not None and self._clock.now() < grant.renew_at else None

    async def _sign_in(self, link: Link) -> Grant:
        now = self._clock.now()
        deployment = self._deployment
        form = {
            "username": deployment.username,
            "password": deployment.password.get_secret_value(),
            "client": "referer",
            "referer": deployment.url,
            "expiration": str(self._token_minutes),
        }
        try:
            answer = await link.post(SIGN_IN_PATH, form)
        except TargetError as error:
            raise refused_sign_in(error) from None
        grant = read_grant(answer, now)
        remember_token(grant.token)  # masked wherever the tool writes
        self._grant = grant
        return grant
