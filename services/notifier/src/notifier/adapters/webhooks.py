"""Chat robots and signed webhooks, each as its platform documents it.

- generic `webhook`: our JSON, signed: `X-Orderflow-Signature: sha256=<hex>`, the
  HMAC-SHA256 with the shared secret of `<X-Orderflow-Timestamp>.<raw body>`.
- `wecom` (WeCom group robot): markdown message; the robot's key is in its URL.
- `dingtalk` (DingTalk custom robot): markdown message; with a secret, `timestamp` (ms) and
  `sign` query parameters: base64 of HMAC-SHA256 keyed with the secret over
  "timestamp\\nsecret", then URL-encoded.
- `feishu` (Feishu/Lark custom bot): rich-text `post`; with a secret, `timestamp` (s) and
  `sign` in the body: base64 of HMAC-SHA256 keyed with "timestamp\\nsecret" over nothing.
- `slack` (incoming webhook): Block Kit message with a button to the order.

Every request carries `X-Orderflow-Delivery` and `Idempotency-Key`, both the delivery id,
the same on every retry, so a receiver can drop a repeat.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import quote_plus

import httpx

from orderflow import times

from ..contacts import WebhookConfig
from ..settings import RateLimit
from .outbound import GuardedTransport, OutboundPolicy, OutboundRefused
from .outgoing import Outgoing, SendError

SIGNATURE_HEADER = "X-Orderflow-Signature"
TIMESTAMP_HEADER = "X-Orderflow-Timestamp"
DELIVERY_HEADER = "X-Orderflow-Delivery"
EVENT_HEADER = "X-Orderflow-Event"

OPEN_ORDER = {"zh": "打开订单", "en": "Open the order"}

# what the platforms accept in one message (bytes for WeCom, characters for the others)
WECOM_MAX_BYTES = 4096
SLACK_SECTION_MAX = 3000


def generic_signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """base64(HMAC-SHA256(key=secret, msg="timestamp\\nsecret")), not yet URL-encoded."""
    string_to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), string_to_sign, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def feishu_sign(secret: str, timestamp_s: str) -> str:
    """base64(HMAC-SHA256(key="timestamp\\nsecret", msg=empty))."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def _truncate_bytes(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "…"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def payload(kind: str, message: Outgoing, *, secret: str | None, now: float) -> dict[str, Any]:
    """The JSON body the platform expects."""
    markdown = message.markdown or message.body
    if kind == "wecom":
        return {
            "msgtype": "markdown",
            "markdown": {"content": _truncate_bytes(markdown, WECOM_MAX_BYTES)},
        }
    if kind == "dingtalk":
        return {"msgtype": "markdown", "markdown": {"title": message.subject, "text": markdown}}
    if kind == "feishu":
        return _feishu(message, secret=secret, now=now)
    if kind == "slack":
        return _slack(message)
    return _generic(message)


def _open_order(message: Outgoing) -> str:
    return OPEN_ORDER.get(message.language, OPEN_ORDER["en"])


def _feishu(message: Outgoing, *, secret: str | None, now: float) -> dict[str, Any]:
    lines = [[{"tag": "text", "text": line}] for line in message.body.splitlines()]
    lines.append([{"tag": "a", "text": _open_order(message), "href": message.link}])
    body: dict[str, Any] = {
        "msg_type": "post",
        "content": {
            "post": {
                "zh_cn" if message.language == "zh" else "en_us": {
                    "title": message.subject,
                    "content": lines,
                }
            }
        },
    }
    if secret:
        timestamp = str(int(now))
        body = {"timestamp": timestamp, "sign": feishu_sign(secret, timestamp), **body}
    return body


def _slack(message: Outgoing) -> dict[str, Any]:
    return {
        "text": f"{message.subject} {message.link}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": message.subject[:150]}},
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _slack_escape(message.body)[:SLACK_SECTION_MAX],
                },
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": _open_order(message)},
                        "url": message.link,
                    }
                ],
            },
        ],
    }


def _generic(message: Outgoing) -> dict[str, Any]:
    """A generic webhook's body: the notification whole, for the receiver to use as it will."""
    return {
        "id": str(message.id),
        "event_id": message.event_id,
        "event_type": message.event_type,
        "order_id": str(message.order_id) if message.order_id else None,
        "recipient": {"id": message.recipient, "name": message.recipient_name},
        "language": message.language,
        "subject": message.subject,
        "text": message.body,
        "markdown": message.markdown,
        "link": message.link,
        "data": message.data,
        "created_at": times.format_time(message.created_at),
    }


def signed_url(kind: str, url: str, *, secret: str | None, now: float) -> str:
    if kind != "dingtalk" or not secret:
        return url
    timestamp = str(int(now * 1000))
    sign = quote_plus(dingtalk_sign(secret, timestamp))
    return f"{url}{'&' if '?' in url else '?'}timestamp={timestamp}&sign={sign}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _status(response: httpx.Response) -> str:
    # the status and its standard phrase only: what the receiver wrote in the body is never
    # kept (it may be an internal service's answer, or echo our request)
    return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


def check_answer(kind: str, response: httpx.Response) -> None:
    """Raise SendError unless the platform took the message."""
    status = response.status_code
    if status == 429 or status == 408 or status == 425 or status >= 500:
        raise SendError(_status(response), retry_after=_retry_after(response))
    if status >= 400:
        raise SendError(_status(response), permanent=True)
    if status >= 300:
        raise SendError(f"{_status(response)}: redirects are not followed", permanent=True)
    if kind in ("wecom", "dingtalk", "feishu"):
        # these answer 200 with an error code in the body (bad signature, too fast, ...)
        try:
            answer = response.json()
        except ValueError:
            raise SendError(f"{_status(response)}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise SendError(f"{_status(response)}: the answer is not a JSON object")
        code = answer.get("errcode", answer.get("code", answer.get("StatusCode", 0)))
        if code not in (0, None):
            # the platform's documented error code, not its free text
            shown = code if isinstance(code, int) else "(not a number)"
            raise SendError(f"{kind} error code {shown}")


class WebhookChannel:
    """One configured robot or webhook, with its own connection pool, so a slow one keeps
    its connections to itself."""

    def __init__(
        self,
        name: str,
        config: WebhookConfig,
        *,
        timeout: float,
        rate_limit: RateLimit | None,
        policy: OutboundPolicy,
    ) -> None:
        self.name = f"webhook:{name}"
        self.kind = config.kind
        self._config = config
        self._url = config.target_url()
        self.rate_limit = rate_limit
        # the robot, not our name for it: two names for one robot share its limit
        self.rate_key = (
            f"{config.kind}:{hashlib.sha256(self._url.encode()).hexdigest()[:24]}"
            if rate_limit
            else None
        )
        # every connection goes to an address checked at send time; redirects are answers
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            transport=GuardedTransport(policy),
        )

    def request(self, message: Outgoing, *, now: float | None = None) -> httpx.Request:
        at = time.time() if now is None else now
        secret = self._config.signing_secret()
        body = _dumps(payload(self.kind, message, secret=secret, now=at))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            DELIVERY_HEADER: str(message.id),
            "Idempotency-Key": str(message.id),
            EVENT_HEADER: message.event_type,
            "User-Agent": "Orderflow-Notifier/1",
        }
        if self.kind == "webhook":
            assert secret, "a generic webhook always has a secret (checked at load)"
            timestamp = str(int(at))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = generic_signature(secret, timestamp, body)
        url = signed_url(self.kind, self._url, secret=secret, now=at)
        return self._client.build_request("POST", url, content=body, headers=headers)

    async def send(self, message: Outgoing) -> None:
        # the errors name what went wrong, never the URL (it carries the robot's key)
        try:
            response = await self._client.send(self.request(message))
        except OutboundRefused as exc:
            raise SendError(f"refused: {exc}", permanent=True) from None
        except httpx.TimeoutException as exc:
            raise SendError(f"timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise SendError(f"request failed ({type(exc).__name__})") from None
        try:
            check_answer(self.kind, response)
        finally:
            await response.aclose()

    async def close(self) -> None:
        await self._client.aclose()
