"""Calls to the assistant owner's back-end: the webhook actions of the pack's `actions.yml`.

One pooled `httpx.AsyncClient` for all of them (no redirects followed: a redirect could
point anywhere), a circuit breaker per endpoint (scheme, host and port; aiobreaker, as for
the model services), retries with the same idempotency key, a cap on the reply's size, and
a guard against server-side request forgery: URLs come only from the pack, and targets on
loopback, private or link-local addresses are refused unless the action allows them.

Nothing here raises to the caller: every call ends in an `ActionOutcome` (ok, error: the
back-end refused with a message, or failed: it could not be reached or answered nonsense),
and logs and metrics name the action and the outcome, never the URL or the secret.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from aiobreaker import CircuitBreaker, CircuitBreakerError
from pydantic import ValidationError

from parlance.pack import Pack
from parlance.webhooks import (
    IDEMPOTENCY_HEADER,
    MAX_REPLY_BYTES,
    SIGNATURE_HEADER,
    ActionError,
    ActionReply,
    ActionRequest,
    MissingVariable,
    resolve_env,
    sign,
)
from services.common.request_id import upstream_headers
from services.gateway import metrics

logger = logging.getLogger(__name__)


class ActionsConfigError(ValueError):
    """The pack's actions cannot be set up in this environment (a variable is missing)."""


@dataclass
class ActionOutcome:
    status: str  # ok | error | failed
    reply: str | None = None
    facts: dict[str, str] = field(default_factory=dict)
    slots: dict[str, str] = field(default_factory=dict)
    error: ActionError | None = None
    reason: str | None = None  # why it failed (timeout, http_503, malformed_reply, ...)

    def view(self, name: str) -> dict:
        """What the chat response says about the call."""
        out = {"name": name, "outcome": self.status}
        if self.error is not None:
            out["error"] = self.error.code
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True)
class Hook:
    name: str
    url: str
    secret: str | None
    timeout_s: float
    retries: int
    allow_private: bool
    facts: frozenset[str]

    @property
    def endpoint(self) -> tuple[str, str, int]:
        u = urlsplit(self.url)
        return u.scheme, u.hostname or "", u.port or (443 if u.scheme == "https" else 80)


class _Failed(Exception):
    """One attempt's failure; `retry` says whether another attempt may help."""

    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _is_public(address: str) -> bool:
    """A public unicast address; IPv6 forms that carry an IPv4 address (mapped, NAT64,
    6to4, Teredo) are judged by the IPv4 address they reach."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6:
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if str(ip).startswith("::") and ip.ipv4_mapped is None and int(ip) >> 32 == 0:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))  # ::127.0.0.1
        inner = [a for a in embedded if a is not None]
        if inner:
            return all(_is_public(str(a)) for a in inner)
    return ip.is_global and not ip.is_multicast


class WebhookCaller:
    def __init__(
        self,
        pack: Pack,
        breaker_fail_max: int = 5,
        breaker_reset_s: float = 10.0,
        environ: dict[str, str] | None = None,
        strict: bool = False,
    ):
        """An action whose `${VAR}` is not set is disabled (its calls fail as
        `not_configured`, and a warning at start names it), so a pack's actions do not
        stop a gateway run without its back-end; `strict` refuses to start instead."""
        self.pack = pack
        self.hooks: dict[str, Hook] = {}
        self.disabled: dict[str, str] = {}
        missing: list[tuple[str, str]] = []
        for name, spec in pack.webhooks.items():
            try:
                url = resolve_env(spec.url, environ)
                secret = resolve_env(spec.secret, environ) if spec.secret else None
            except MissingVariable as e:
                missing.append((name, f"actions.yml: actions.{name}: {e}"))
                continue
            try:
                parts = urlsplit(url)
                ok = parts.scheme in ("http", "https") and parts.hostname and (parts.port or 1)
            except ValueError:  # a port out of range, a malformed IPv6 literal
                ok = False
            if not ok:
                missing.append((name, f"actions.yml: actions.{name}.url: not a usable http(s) URL"))
                continue
            self.hooks[name] = Hook(
                name,
                url,
                secret or None,
                spec.timeout_s,
                spec.retries,
                spec.allow_private_network,
                frozenset(spec.facts),
            )
        if missing and strict:
            raise ActionsConfigError("; ".join(problem for _, problem in missing))
        for name, problem in missing:
            self.disabled[name] = problem
            logger.warning("action disabled: %s", problem)
        self.client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self.breakers: dict[tuple[str, str, int], CircuitBreaker] = {}
        self.breaker_fail_max = breaker_fail_max
        self.breaker_reset_s = breaker_reset_s
        for hook in self.hooks.values():
            metrics.ACTION_BREAKER.labels(hook.name).set(0)

    def _breaker(self, hook: Hook) -> CircuitBreaker:
        if hook.endpoint not in self.breakers:
            self.breakers[hook.endpoint] = CircuitBreaker(
                fail_max=self.breaker_fail_max,
                timeout_duration=timedelta(seconds=self.breaker_reset_s),
            )
        return self.breakers[hook.endpoint]

    def refusal(self, name: str) -> ActionOutcome | None:
        """The outcome of calling an action that has no usable hook (disabled at start-up or
        unknown), counted as a call; None when it can be called. Lets a caller skip
        building a request that would not be sent."""
        if name in self.hooks:
            return None
        metrics.ACTION_CALLS.labels(name, "not_configured").inc()
        return ActionOutcome("failed", reason="not_configured")

    async def call(self, name: str, request: ActionRequest) -> ActionOutcome:
        hook = self.hooks.get(name)
        if hook is None:
            return self.refusal(name)
        started = time.perf_counter()
        breaker = self._breaker(hook)
        try:
            outcome = await breaker.call_async(self._call, hook, request)
        except CircuitBreakerError:
            outcome = ActionOutcome("failed", reason="breaker_open")
        except _Failed as e:
            outcome = ActionOutcome("failed", reason=e.reason)
        except Exception as e:  # a turn must never fail because of a back-end
            # the type only: an exception's text may carry the URL
            logger.warning("action %s: unexpected %s", name, type(e).__name__)
            outcome = ActionOutcome("failed", reason="internal_error")
        elapsed = time.perf_counter() - started
        metrics.ACTION_SECONDS.labels(name).observe(elapsed)
        metrics.ACTION_CALLS.labels(name, outcome.reason or outcome.status).inc()
        metrics.ACTION_BREAKER.labels(name).set(metrics.BREAKER_VALUE.get(breaker.current_state, 0))
        if outcome.status == "failed":
            logger.warning("action %s failed: %s (%.0f ms)", name, outcome.reason, elapsed * 1e3)
        return outcome

    async def _call(self, hook: Hook, request: ActionRequest) -> ActionOutcome:
        """Every attempt of one call; raises _Failed (counted by the breaker) when none
        gave a usable answer. A refusal with a message (`error`) is an answer."""
        await self._check_target(hook)
        body = request.model_dump_json().encode()
        last: _Failed | None = None
        for attempt in range(hook.retries + 1):
            if attempt:
                await asyncio.sleep(min(0.1 * 2 ** (attempt - 1), 1.0))
            try:
                reply = await self._attempt(hook, request, body)
            except _Failed as e:
                last = e
                if not e.retry:
                    break
                continue
            if reply.error is not None:
                return ActionOutcome("error", error=reply.error, slots=reply.slots)
            unknown = set(reply.facts) - hook.facts
            if unknown:
                # a fact the pack did not declare: no template uses it, and the generator
                # would refuse it; dropped rather than failing the turn
                logger.warning("action %s returned undeclared facts %s", hook.name, sorted(unknown))
            facts = {k: v for k, v in reply.facts.items() if k in hook.facts}
            return ActionOutcome("ok", reply=reply.reply, facts=facts, slots=reply.slots)
        raise last or _Failed("failed", False)

    async def _attempt(self, hook: Hook, request: ActionRequest, body: bytes) -> ActionReply:
        headers = {
            **upstream_headers(),
            "Content-Type": "application/json",
            "User-Agent": "parlance-gateway",
            IDEMPOTENCY_HEADER: request.idempotency_key,
        }
        if hook.secret:
            headers[SIGNATURE_HEADER] = sign(hook.secret, body)  # signed per attempt: fresh t
        try:
            async with asyncio.timeout(hook.timeout_s):
                async with self.client.stream("POST", hook.url, content=body, headers=headers) as r:
                    if r.status_code >= 500 or r.status_code == 429:
                        raise _Failed(f"http_{r.status_code}", retry=True)
                    if r.status_code != 200:
                        raise _Failed(f"http_{r.status_code}", retry=False)
                    if "json" not in r.headers.get("content-type", ""):
                        raise _Failed("not_json", retry=False)
                    size, chunks = 0, []
                    async for chunk in r.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_REPLY_BYTES:
                            raise _Failed("reply_too_large", retry=False)
                        chunks.append(chunk)
        except TimeoutError:
            raise _Failed("timeout", retry=True) from None
        except httpx.TransportError as e:
            raise _Failed(f"unreachable_{type(e).__name__}", retry=True) from None
        except httpx.HTTPError:  # a body that does not decode (a false Content-Encoding)
            raise _Failed("malformed_reply", retry=False) from None
        try:
            return ActionReply.model_validate(json.loads(b"".join(chunks)))
        except (ValueError, ValidationError, RecursionError):
            raise _Failed("malformed_reply", retry=False) from None

    async def _check_target(self, hook: Hook) -> None:
        """Refuse loopback, private, link-local and other non-public addresses unless the
        action allows them: a pack (or a templated host) must not reach the gateway's own
        network by accident. The name is resolved here; the connection resolves it again
        (a DNS answer that changes in between is not caught: docs/actions.md)."""
        if hook.allow_private:
            return
        _, host, port = hook.endpoint
        try:
            async with asyncio.timeout(hook.timeout_s):
                addresses = [host] if _is_ip(host) else await _resolve(host, port)
        except (OSError, TimeoutError):
            raise _Failed("unresolvable", retry=False) from None
        if not addresses or not all(_is_public(a) for a in addresses):
            raise _Failed("target_refused", retry=False)

    async def close(self) -> None:
        await self.client.aclose()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})
