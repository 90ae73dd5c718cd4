"""Notification senders: email over SMTP (smtplib) and Slack / Teams incoming webhooks (httpx, lazily).

Each sender maps its failures onto the error tree so ``core.observability.notify.Notifier``
knows what to retry: connection refused, timeouts, 4xx SMTP replies, HTTP 5xx/408 and 429
(with Retry-After) are ``TransientError``/``RateLimited``; rejected recipients, failed SMTP
login and other HTTP 4xx (a deleted or mistyped webhook) are ``ConfigError`` (needs a person).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from html import escape
from typing import Any

from core.errors import ConfigError, RateLimited, TransientError
from core.observability.notify import AlertMessage, Sender, Target

_SEVERITY_COLOURS = {"critical": "#d1242f", "warning": "#bf8700", "info": "#0969da"}
_TEAMS_COLOURS = {"critical": "attention", "warning": "warning", "info": "accent"}


def _facts(message: AlertMessage) -> list[tuple[str, str]]:
    rows = [("Tenant", message.tenant_id), ("Rule", message.rule), ("Severity", message.severity)]
    if message.subject:
        rows.append(("Subject", message.subject))
    if message.value:
        rows.append(("Value", message.value))
    if message.threshold:
        rows.append(("Threshold", message.threshold))
    rows.append(("Since", message.at))
    return rows


# message formats ------------------------------------------------------------------------------
def slack_payload(message: AlertMessage) -> dict[str, Any]:
    """Slack incoming-webhook body: Block Kit blocks with ``text`` as the notification fallback."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": message.headline[:150], "emoji": False}},
        {"type": "section", "text": {"type": "mrkdwn", "text": message.summary[:2900]}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in _facts(message)][:10],
        },
    ]
    if message.link:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Open in console"}, "url": message.link}
                ],
            }
        )
    return {
        "text": f"{message.headline}: {message.summary}",
        "blocks": blocks,
        "attachments": [{"color": _SEVERITY_COLOURS.get(message.severity, "#6e7781"), "fallback": message.summary}],
    }


def teams_payload(message: AlertMessage) -> dict[str, Any]:
    """Teams incoming-webhook body: an Adaptive Card in a message envelope (Workflows and connectors)."""
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": message.headline,
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
                "color": _TEAMS_COLOURS.get(message.severity, "default"),
            },
            {"type": "TextBlock", "text": message.summary, "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in _facts(message)]},
        ],
    }
    if message.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in console", "url": message.link}]
    return {
        "type": "message",
        "summary": message.headline,
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def email_message(message: AlertMessage, sender: str, to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = message.headline
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1] or "castiel.local")
    # Replies and later reminders about one alert thread together in mail clients.
    msg["X-Castiel-Alert"] = message.alert_id or message.rule
    lines = [message.summary, ""] + [f"{k}: {v}" for k, v in _facts(message)]
    if message.link:
        lines += ["", f"Open in the console: {message.link}"]
    msg.set_content("\n".join(lines))
    rows = "".join(f"<tr><th align='left'>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in _facts(message))
    link = f"<p><a href='{escape(message.link)}'>Open in the console</a></p>" if message.link else ""
    colour = _SEVERITY_COLOURS.get(message.severity, "#6e7781")
    msg.add_alternative(
        f"<html><body><h2 style='color:{colour}'>{escape(message.headline)}</h2>"
        f"<p>{escape(message.summary)}</p><table>{rows}</table>{link}</body></html>",
        subtype="html",
    )
    return msg


# senders ----------------------------------------------------------------------------------------
class SmtpSender:
    """Sends alert emails through one SMTP server (STARTTLS or implicit TLS when configured)."""

    def __init__(
        self,
        host: str,
        port: int = 25,
        sender: str = "castiel-alerts@localhost",
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        use_ssl: bool = False,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.use_ssl = use_ssl
        self.timeout = timeout
        self.ssl_context = ssl_context

    def send(self, target: Target, message: AlertMessage) -> None:
        mail = email_message(message, self.sender, target.address)
        where = f"SMTP server {self.host}:{self.port}"
        try:
            smtp_cls = smtplib.SMTP_SSL if self.use_ssl else smtplib.SMTP
            kwargs: dict[str, Any] = {"timeout": self.timeout}
            if self.use_ssl:
                kwargs["context"] = self.ssl_context or ssl.create_default_context()
            with smtp_cls(self.host, self.port, **kwargs) as smtp:
                if self.starttls and not self.use_ssl:
                    smtp.starttls(context=self.ssl_context or ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(mail)
        except smtplib.SMTPAuthenticationError as e:
            raise ConfigError(f"{where} refused the login for {self.username!r}: {e.smtp_code} {e.smtp_error!r}") from e
        except smtplib.SMTPRecipientsRefused as e:
            raise ConfigError(f"{where} refused the recipient {target.address}: {e.recipients}") from e
        except smtplib.SMTPResponseException as e:
            text = e.smtp_error.decode(errors="replace") if isinstance(e.smtp_error, bytes) else str(e.smtp_error)
            if 400 <= e.smtp_code < 500:
                raise TransientError(f"{where} answered {e.smtp_code} {text} (temporary)") from e
            raise ConfigError(f"{where} answered {e.smtp_code} {text}") from e
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as e:
            raise TransientError(f"cannot reach the {where}: {e}") from e
        except smtplib.SMTPException as e:
            raise ConfigError(f"{where}: {e}") from e


class WebhookSender:
    """Posts to a Slack or Teams incoming webhook in that channel's message format."""

    def __init__(self, kind: str, timeout: float = 10.0, verify: bool | str = True) -> None:
        if kind not in ("slack", "teams"):
            raise ValueError(f"WebhookSender is for slack or teams, not {kind!r}")
        self.kind = kind
        self.timeout = timeout
        self.verify = verify

    def payload(self, message: AlertMessage) -> dict[str, Any]:
        return slack_payload(message) if self.kind == "slack" else teams_payload(message)

    def send(self, target: Target, message: AlertMessage) -> None:
        import httpx  # adapters import vendor clients lazily, so core stays importable without them

        where = f"{self.kind} webhook {target.label}"
        try:
            resp = httpx.post(target.address, json=self.payload(message), timeout=self.timeout, verify=self.verify)
        except httpx.TimeoutException as e:
            raise TransientError(f"{where} timed out after {self.timeout:.0f}s") from e
        except httpx.TransportError as e:
            raise TransientError(f"cannot reach the {where}: {e}") from e
        if resp.is_success:
            return
        body = resp.text[:200].strip()
        if resp.status_code == 429:
            retry_after = resp.headers.get("Retry-After")
            try:
                wait = float(retry_after) if retry_after is not None else None
            except ValueError:
                wait = None
            raise RateLimited(f"{where} is rate limiting (429): {body}", retry_after=wait)
        if resp.status_code >= 500 or resp.status_code == 408:
            raise TransientError(f"{where} answered {resp.status_code}: {body}")
        raise ConfigError(
            f"{where} answered {resp.status_code}: {body or resp.reason_phrase}; "
            "check the webhook URL (it may have been deleted or revoked)"
        )


def build_senders(
    smtp_host: str | None = None,
    smtp_port: int = 25,
    smtp_sender: str = "castiel-alerts@localhost",
    smtp_username: str | None = None,
    smtp_password: str | None = None,
    smtp_starttls: bool = False,
    smtp_ssl: bool = False,
    timeout: float = 10.0,
) -> dict[str, Sender]:
    """Senders for every channel that is configured (email only when an SMTP host is set)."""
    senders: dict[str, Sender] = {"slack": WebhookSender("slack", timeout), "teams": WebhookSender("teams", timeout)}
    if smtp_host:
        senders["email"] = SmtpSender(
            smtp_host, smtp_port, smtp_sender, smtp_username, smtp_password, smtp_starttls, smtp_ssl, timeout
        )
    return senders


def probe_http(url: str, timeout: float = 5.0) -> tuple[int | None, str]:
    """One GET for health checks: (status, short text) or (None, why it could not connect)."""
    import httpx

    try:
        resp = httpx.get(url, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as e:
        return None, f"{type(e).__name__}: {e}"
    return resp.status_code, resp.text[:80].strip() or resp.reason_phrase
