"""Which hosts exifguard intercepts: one maintained table, three generated views.

The same `HostSet` produces
  * the addon's matcher (`HostSet.classify(host, origin, referer)`),
  * mitmproxy's `allow_hosts` regexes (TLS is decrypted only for these; everything
    else is tunnelled with the server's real certificate),
  * the PAC file's host list and the CA's name constraints,
so the three can never disagree.

Two kinds of entry:
  * *dedicated* hosts receive AI uploads and nothing else of interest to us
    (claude.ai, *.oaiusercontent.com, api.openai.com, ...): every request body is checked;
  * *shared* storage hosts (*.blob.core.windows.net, S3, Cloudinary, SharePoint) serve
    the whole web; a request there is only an upload candidate when its Origin or
    Referer is an AI app (chat.mistral.ai uploading to Azure, perplexity.ai to
    Cloudinary).  TLS to them must still be intercepted so the headers can be read.

Sources: ../shared/docs/upload-shapes.md §1, §6 and §8 (the service table and the
storage hosts to intercept).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit


class Kind(StrEnum):
    DEDICATED = "dedicated"
    SHARED = "shared"


@dataclass(frozen=True, slots=True)
class HostEntry:
    domain: str
    """Lower-case DNS name without port or trailing dot."""
    service: str
    kind: Kind = Kind.DEDICATED
    subdomains: bool = False
    """Also match any name ending in ".<domain>"."""

    def matches(self, host: str) -> bool:
        return host == self.domain or (self.subdomains and host.endswith("." + self.domain))

    def allow_hosts_regex(self, port: int = 443) -> str:
        """Anchored regex for mitmproxy's `allow_hosts` (matched against "host:port")."""
        prefix = r"(.+\.)?" if self.subdomains else ""
        return f"^{prefix}{re.escape(self.domain)}:{port}$"


D, S = Kind.DEDICATED, Kind.SHARED

#: The maintained default list: every service and storage host in upload-shapes.md.
#: ChatGPT's chat origin (chatgpt.com) is deliberately *not* here: its image bytes go
#: to *.oaiusercontent.com, and intercepting chatgpt.com itself trips Cloudflare's
#: TLS-fingerprint challenge (mitmproxy-notes.md §8).  Gemini's web origin is absent
#: for the same reason: its bytes go to the Google push hosts below.
DEFAULT_HOSTS: tuple[HostEntry, ...] = (
    HostEntry("oaiusercontent.com", "ChatGPT", D, subdomains=True),
    HostEntry("claude.ai", "Claude", D),
    HostEntry("push.clients6.google.com", "Gemini", D),
    HostEntry("content-push.googleapis.com", "Gemini", D),
    HostEntry("copilot.microsoft.com", "Copilot", D),
    HostEntry("substrate.office.com", "Microsoft 365 Copilot", D),
    HostEntry("substrate.svc.cloud.microsoft", "Microsoft 365 Copilot", D),
    HostEntry("ppl-ai-file-upload.s3.amazonaws.com", "Perplexity", D),
    HostEntry("chat.deepseek.com", "DeepSeek", D),
    HostEntry("grok.com", "Grok", D),
    HostEntry("chat.mistral.ai", "Le Chat", D),
    HostEntry("mistralaichatupprodswe.blob.core.windows.net", "Le Chat", D),
    HostEntry("rupload.meta.ai", "Meta AI", D),
    HostEntry("poe.com", "Poe", D),
    HostEntry("huggingface.co", "HuggingChat", D),
    HostEntry("api.openai.com", "OpenAI API", D),
    HostEntry("api.anthropic.com", "Anthropic API", D),
    HostEntry("generativelanguage.googleapis.com", "Gemini API", D),
    HostEntry("api.mistral.ai", "Mistral API", D),
    HostEntry("api.x.ai", "xAI API", D),
    # shared storage: watched only when the request comes from an AI app
    HostEntry("blob.core.windows.net", "Azure Blob storage", S, subdomains=True),
    HostEntry("sharepoint.com", "SharePoint", S, subdomains=True),
    HostEntry("api.cloudinary.com", "Cloudinary", S),
    HostEntry("s3.amazonaws.com", "Amazon S3", S, subdomains=True),
)

#: Web origins of AI apps: an upload to a shared storage host whose Origin or Referer
#: is one of these (or a subdomain) is treated as an AI upload.
AI_APP_ORIGINS: tuple[str, ...] = (
    "chatgpt.com", "chat.openai.com", "claude.ai", "gemini.google.com", "aistudio.google.com",
    "copilot.microsoft.com", "copilot.cloud.microsoft", "m365.cloud.microsoft", "office.com",
    "perplexity.ai", "chat.deepseek.com", "grok.com", "x.com", "chat.mistral.ai", "meta.ai",
    "poe.com", "huggingface.co",
)

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalise_host(host: str) -> str:
    """Lower-case, strip brackets, a trailing dot and a port ("Claude.AI.:443" -> "claude.ai")."""
    h = host.strip().lower()
    if h.startswith("["):  # IPv6 literal
        return h[1:h.index("]")] if "]" in h else h[1:]
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def parse_host_spec(spec: str) -> tuple[str, bool]:
    """Parse one user host ("example.com" or "*.example.com") -> (domain, subdomains).

    Raises ValueError with a message a person can act on.
    """
    s = spec.strip().lower()
    subdomains = False
    if s.startswith("*."):
        subdomains, s = True, s[2:]
    elif s.startswith("."):
        subdomains, s = True, s[1:]
    s = s.rstrip(".")
    if not s or "*" in s:
        raise ValueError(f"invalid host {spec!r}: use a name like 'example.com' or '*.example.com'")
    labels = s.split(".")
    if len(labels) < 2 or not all(_LABEL.match(lab) for lab in labels):
        raise ValueError(f"invalid host {spec!r}: use a DNS name like 'example.com' "
                         "(letters, digits, hyphens; no scheme, path or port)")
    return s, subdomains


@dataclass(frozen=True, slots=True)
class Match:
    entry: HostEntry
    reason: str
    """"host" (dedicated host) or "origin" (shared storage, AI Origin/Referer)."""


@dataclass(frozen=True)
class HostSet:
    entries: tuple[HostEntry, ...]
    origins: tuple[str, ...] = AI_APP_ORIGINS

    @classmethod
    def build(cls, extra: Iterable[str] = (), remove: Iterable[str] = (),
              base: Iterable[HostEntry] = DEFAULT_HOSTS) -> "HostSet":
        """The default list plus user additions, minus user removals.

        `remove` takes the same spelling as the table ("claude.ai", "*.blob.core.windows.net"
        or just "blob.core.windows.net"); removing a name not in the list is an error so a
        typo does not silently leave a host intercepted.
        """
        entries: dict[str, HostEntry] = {e.domain: e for e in base}
        for spec in extra:
            dom, sub = parse_host_spec(spec)
            entries[dom] = HostEntry(dom, "user", D, subdomains=sub or
                                     (entries[dom].subdomains if dom in entries else False))
        for spec in remove:
            dom, _ = parse_host_spec(spec)
            if dom not in entries:
                raise ValueError(f"cannot remove {spec!r}: it is not in the host list")
            del entries[dom]
        return cls(tuple(entries.values()))

    def lookup(self, host: str) -> HostEntry | None:
        h = normalise_host(host)
        best: HostEntry | None = None
        for e in self.entries:  # most specific (longest) match wins
            if e.matches(h) and (best is None or len(e.domain) > len(best.domain)):
                best = e
        return best

    def is_ai_origin(self, value: str | None) -> bool:
        """True when an Origin or Referer header names an AI app (or one of our dedicated hosts)."""
        if not value:
            return False
        try:
            host = urlsplit(value.strip()).hostname or ""
        except ValueError:
            return False
        host = host.rstrip(".").lower()
        if not host:
            return False
        if any(host == o or host.endswith("." + o) for o in self.origins):
            return True
        e = self.lookup(host)
        return e is not None and e.kind is Kind.DEDICATED

    def classify(self, host: str, origin: str | None = None,
                 referer: str | None = None) -> Match | None:
        """Is a request to `host` an AI upload candidate?  None means: leave it alone."""
        e = self.lookup(host)
        if e is None:
            return None
        if e.kind is Kind.DEDICATED:
            return Match(e, "host")
        if self.is_ai_origin(origin) or self.is_ai_origin(referer):
            return Match(e, "origin")
        return None

    def allow_hosts(self, port: int = 443) -> list[str]:
        """mitmproxy `allow_hosts` patterns: one anchored regex per entry."""
        return [e.allow_hosts_regex(port) for e in self.entries]

    def pac_entries(self) -> list[tuple[str, bool]]:
        return [(e.domain, e.subdomains) for e in self.entries]

    def domains(self) -> list[str]:
        """DNS names for the CA's permitted subtrees (a subtree also covers subdomains)."""
        out: list[str] = []
        for e in sorted(self.entries, key=lambda e: len(e.domain)):
            if not any(e.domain == d or e.domain.endswith("." + d) for d in out):
                out.append(e.domain)
        return sorted(out)
