"""Email over SMTP: a plain-text and an HTML part, headers encoded for any language."""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from ..settings import RateLimit, Settings
from .outbound import OutboundRefused, connect_socket
from .outgoing import Outgoing, SendError


def message_id(delivery_id: object, sender: str) -> str:
    """Stable across retries, so a mailbox that got the message twice can tell."""
    domain = sender.rpartition("@")[2] or "orderflow.invalid"
    return f"<{delivery_id}@{domain}>"


def build_message(message: Outgoing, *, sender: str, sender_name: str) -> EmailMessage:
    """The email for one delivery. `EmailMessage` with the default policy encodes a Chinese
    subject or display name as RFC 2047 words when the message is serialised for SMTP."""
    if not message.address:
        raise SendError("the delivery has no email address", permanent=True)
    local, _, domain = sender.rpartition("@")
    to_local, _, to_domain = message.address.rpartition("@")
    mail = EmailMessage()
    mail["Subject"] = message.subject
    mail["From"] = Address(display_name=sender_name, username=local, domain=domain)
    mail["To"] = Address(
        display_name=message.recipient_name or "", username=to_local, domain=to_domain
    )
    mail["Date"] = format_datetime(message.created_at)
    mail["Message-ID"] = message_id(message.id, sender)
    # mail systems hold back auto-replies (out of office) to a message marked like this
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Orderflow-Delivery"] = str(message.id)
    mail["X-Orderflow-Event"] = message.event_type
    mail.set_content(message.body)
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    # after the content: set_content() clears every Content-* header set before it, and
    # add_alternative() moves them into the first part. On the message and on each part,
    # for clients that look at either
    language = content_language(message.language)
    for part in mail.walk():
        part["Content-Language"] = language
    return mail


def content_language(language: str) -> str:
    """The RFC 3282 tag of a template language: Chinese is written in Simplified
    characters, as in mainland China."""
    return "zh-CN" if language == "zh" else language


class Mailer:
    name = "email"
    rate_key: str | None = None
    rate_limit: RateLimit | None = None

    def __init__(self, settings: Settings) -> None:
        if not (settings.smtp_host and settings.mail_from):
            raise ValueError("email needs NOTIFIER_SMTP_HOST and NOTIFIER_MAIL_FROM")
        self._settings = settings
        self._host: str = settings.smtp_host
        self._sender: str = settings.mail_from
        self._policy = settings.outbound_policy

    async def send(self, message: Outgoing) -> None:
        s = self._settings
        mail = build_message(message, sender=self._sender, sender_name=s.mail_from_name)
        # the errors keep the SMTP code and our own words, not the server's text
        try:
            # connected here, to an address checked now; the name stays the TLS name. The
            # socket belongs to aiosmtplib's transport from then on, which closes it
            sock = await connect_socket(
                self._policy, self._host, s.smtp_port, timeout=s.delivery_timeout
            )
        except OutboundRefused as exc:
            raise SendError(f"refused: {exc}", permanent=True) from None
        except OSError as exc:
            raise SendError(f"SMTP connection failed ({type(exc).__name__})") from None
        try:
            await aiosmtplib.send(
                mail,
                hostname=self._host,
                sock=sock,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                use_tls=s.smtp_security == "tls",
                start_tls=s.smtp_security == "starttls",
                validate_certs=s.smtp_validate_certs,
                timeout=s.delivery_timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise SendError(
                f"recipient refused (SMTP {', '.join(map(str, codes))})",
                permanent=all(c >= 500 for c in codes),
            ) from None
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise SendError(f"SMTP {exc.code}: login refused", permanent=True) from None
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is the server's final word (no such mailbox, message refused); 4xx is "later"
            raise SendError(f"SMTP {exc.code}", permanent=exc.code >= 500) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SendError(f"SMTP failed ({type(exc).__name__})") from None

    async def close(self) -> None:
        return None
