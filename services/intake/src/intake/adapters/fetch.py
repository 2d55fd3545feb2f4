"""Fetching a file named by URL in `order.submit` (decision 0024): one GET through the
shared outbound guard (`orderflow.outbound`, decision 0015), streamed into an
`IncomingFile`, which stops it past the upload size limit.

A failure that can never pass (a 4xx answer, a redirect, a host or address not allowed, a
file over the limit) raises `FetchRefused`; one that may pass (no connection, a timeout, a
5xx, 408 or 429 answer) raises `FetchUnavailable`, a `ConnectionError`, which the bus
consumer retries with back-off like any other transient fault. The URL is never logged
nor written into an error (a pre-signed URL is a credential)."""

from __future__ import annotations

import httpx
import structlog

from orderflow.outbound import GuardedTransport, OutboundPolicy, OutboundRefused

from .content import IncomingFile, TooLarge

log = structlog.get_logger(__name__)

USER_AGENT = "Orderflow-Intake/1"
#: Answers that say "later": the server is busy or failing, not the file missing.
_RETRYABLE = frozenset({408, 425, 429})


class FetchRefused(Exception):
    """The file cannot be fetched, now or later; the message says why (without the URL)."""


class FetchUnavailable(ConnectionError):
    """The file could not be fetched now; fetching it again may succeed."""


def client(policy: OutboundPolicy, *, timeout: float) -> httpx.AsyncClient:
    """A client whose every connection goes to an address the policy allows; redirects are
    not followed (they could point anywhere), the environment's proxies not used."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        trust_env=False,
        transport=GuardedTransport(policy),
        headers={"User-Agent": USER_AGENT, "Accept": "*/*"},
    )


async def download(http: httpx.AsyncClient, url: str, into: IncomingFile) -> None:
    """GET `url` into `into`. Raises FetchRefused, FetchUnavailable, or the file's
    TooLarge as soon as the limit is passed (by Content-Length, or counted)."""
    host = httpx.URL(url).host
    try:
        async with http.stream("GET", url) as response:
            status = response.status_code
            if status >= 500 or status in _RETRYABLE:
                log.info("file server unavailable", host=host, status=status)
                raise FetchUnavailable(f"the file's server answered {status}; retried later")
            if 300 <= status < 400:
                raise FetchRefused(
                    f"the file's server answered {status} (a redirect); redirects are not "
                    "followed: name the file's own URL"
                )
            if status != 200:
                raise FetchRefused(
                    f"the file's server answered {status} {response.reason_phrase}".rstrip()
                )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > into.limit:
                raise TooLarge(into.limit)  # before anything is read
            async for chunk in response.aiter_bytes():
                into.write(chunk)
    except OutboundRefused as exc:
        raise FetchRefused(f"not fetched: {exc}") from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise FetchRefused(f"not a URL that can be fetched: {exc}") from None
    except httpx.TimeoutException as exc:
        log.info("file fetch timed out", host=host, error=type(exc).__name__)
        raise FetchUnavailable(f"fetching the file timed out ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        log.info("file fetch failed", host=host, error=type(exc).__name__)
        raise FetchUnavailable(f"fetching the file failed ({type(exc).__name__})") from None
