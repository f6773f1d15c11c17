"""Which hosts exifguard intercepts: one data table, four generated views.

The table is `services.toml` in this package (versioned, with each service's hosts, how
they match, Origins, upload shapes, declared sizes/hashes, evidence date and
confidence).  From it the same `HostSet` produces
  * the addon's matcher (`HostSet.classify(host, origin, referer)`),
  * mitmproxy's `allow_hosts` regexes (TLS is decrypted only for these; everything
    else is tunnelled with the server's real certificate),
  * the PAC file's host lists and the CA's name constraints (`domains()`),
so they can never disagree.  `exifguard hosts` lists it.

Two kinds of host rule:
  * *dedicated* hosts receive AI uploads and nothing else of interest to us
    (claude.ai, *.oaiusercontent.com, api.openai.com, ...): every request body is checked;
  * *shared* hosts (*.blob.core.windows.net, S3, Cloudinary, SharePoint, ByteDance's
    tos-*.snssdk.com) serve the whole web; a request there is only an upload candidate
    when its Origin or Referer is an AI app (chat.mistral.ai uploading to Azure,
    doubao.com to ByteDance).  TLS to them must still be intercepted so the headers can
    be read.

Three ways a rule names hosts: exactly ("claude.ai"), a domain and all its subdomains
("*.oaiusercontent.com"), or one label matching a glob directly under a domain
("*genspark*.blob.core.windows.net": a storage account; "tos-*.snssdk.com"): the
narrowest the evidence allows.

Growing the table without code (`HostSet.build(extra=...)`, also exifguard_hosts):
  * "example.com" / "*.example.com" / "up-*.example.com": a dedicated user host;
  * "service:ID": every host of a table service, e.g. the opt-in "service:grok-x";
  * "file:/path/services.toml": the services in a user file (same format as the table,
    see `load_user_services`), validated with errors a person can act on.

Sources: ../shared/docs/upload-shapes.md §1, §6, §8 and §9.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TABLE_RESOURCE = "services.toml"
SERVICE_PREFIX = "service:"
FILE_PREFIX = "file:"
CONFIDENCE = ("high", "med-high", "med", "med-low", "low-med", "low")


class Kind(StrEnum):
    DEDICATED = "dedicated"
    SHARED = "shared"


_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_GLOB = re.compile(r"^[a-z0-9*-]{1,63}$")


@dataclass(frozen=True, slots=True)
class HostEntry:
    domain: str
    """Lower-case DNS name without port or trailing dot (for a `label` rule: the parent)."""
    service: str
    kind: Kind = Kind.DEDICATED
    subdomains: bool = False
    """Also match any name ending in ".<domain>" (always true for a `label` rule)."""
    label: str | None = None
    """A glob ("*genspark*", "tos-*") the one label directly under `domain` must match."""
    service_id: str = ""
    why: str = ""

    @property
    def spec(self) -> str:
        """The rule as written in the table ("claude.ai", "*.x.com", "tos-*.snssdk.com")."""
        if self.label is not None:
            return f"{self.label}.{self.domain}"
        return f"*.{self.domain}" if self.subdomains else self.domain

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.domain, self.label)

    def _label_regex(self) -> str:
        assert self.label is not None
        return "".join("[a-z0-9-]*" if c == "*" else re.escape(c) for c in self.label)

    def matches(self, host: str) -> bool:
        if self.label is not None:
            if not host.endswith("." + self.domain):
                return False
            first = host[:-len(self.domain) - 1]
            return re.fullmatch(self._label_regex(), first) is not None
        return host == self.domain or (self.subdomains and host.endswith("." + self.domain))

    def allow_hosts_regex(self, port: int = 443) -> str:
        """Anchored regex for mitmproxy's `allow_hosts` (matched against "host:port")."""
        if self.label is not None:
            return f"^{self._label_regex()}\\.{re.escape(self.domain)}:{port}$"
        prefix = r"(.+\.)?" if self.subdomains else ""
        return f"^{prefix}{re.escape(self.domain)}:{port}$"

    def pac_regex(self) -> str | None:
        """JavaScript regex for the PAC file (label rules only; the others are name lists)."""
        if self.label is None:
            return None
        return f"^{self._label_regex()}\\.{re.escape(self.domain)}$"


@dataclass(frozen=True, slots=True)
class HostRule:
    """One host rule of a service as the table states it (for `exifguard hosts`)."""
    host: str
    kind: Kind
    shapes: tuple[str, ...] = ()
    declared: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Service:
    id: str
    name: str
    hosts: tuple[HostRule, ...]
    origins: tuple[str, ...] = ()
    evidence: str = ""
    confidence: str = ""
    opt_in: bool = False
    why: str = ""
    source: str = "table"
    """"table" (shipped with exifguard) or the user file it came from."""

    def entries(self) -> tuple[HostEntry, ...]:
        out = []
        for r in self.hosts:
            dom, sub, label = parse_host_rule(r.host)
            out.append(HostEntry(dom, self.name, r.kind, sub, label, self.id, self.why))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Table:
    version: str
    services: tuple[Service, ...]

    def get(self, sid: str) -> Service | None:
        return next((s for s in self.services if s.id == sid), None)


class TableError(ValueError):
    """A service table or user services file that cannot be used (message names where)."""


# ---- parsing ------------------------------------------------------------------------------
def normalise_host(host: str) -> str:
    """Lower-case, strip brackets, a trailing dot and a port ("Claude.AI.:443" -> "claude.ai")."""
    h = host.strip().lower()
    if h.startswith("["):  # IPv6 literal
        return h[1:h.index("]")] if "]" in h else h[1:]
    if h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def _check_dns(s: str, spec: str) -> None:
    labels = s.split(".")
    if len(labels) < 2 or not all(_LABEL.match(lab) for lab in labels):
        raise ValueError(f"invalid host {spec!r}: use a DNS name like 'example.com' "
                         "(letters, digits, hyphens; no scheme, path or port)")


def parse_host_rule(spec: str) -> tuple[str, bool, str | None]:
    """One host rule -> (domain, subdomains, label glob).

    "example.com" (exact), "*.example.com" (it and its subdomains) or
    "up-*.example.com" / "*part*.example.com" (one label matching the glob, directly
    under example.com, which must have at least two labels).  Raises ValueError with a
    message a person can act on.
    """
    s = spec.strip().lower()
    if s.startswith("*.") or s.startswith("."):
        s = s[2:] if s.startswith("*.") else s[1:]
        s = s.rstrip(".")
        if not s or "*" in s:
            raise ValueError(f"invalid host {spec!r}: use a name like 'example.com' or '*.example.com'")
        _check_dns(s, spec)
        return s, True, None
    s = s.rstrip(".")
    if "*" in s:
        first, _, rest = s.partition(".")
        if not rest or "*" in rest or not _GLOB.match(first) or first.strip("*") == "":
            raise ValueError(f"invalid host {spec!r}: a wildcard may only stand inside the first label "
                             "('up-*.example.com', '*name*.example.com') or as a whole first label "
                             "('*.example.com')")
        _check_dns(rest, spec)
        return rest, True, first
    if not s:
        raise ValueError(f"invalid host {spec!r}: use a name like 'example.com' or '*.example.com'")
    _check_dns(s, spec)
    return s, False, None


def parse_host_spec(spec: str) -> tuple[str, bool]:
    """Parse one user host ("example.com" or "*.example.com") -> (domain, subdomains).

    Kept for callers that do not know label rules; a label rule raises ValueError here.
    """
    dom, sub, label = parse_host_rule(spec)
    if label is not None:
        raise ValueError(f"invalid host {spec!r}: use a name like 'example.com' or '*.example.com'")
    return dom, sub


def _origin_name(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise TableError(f"{where}: an origin must be a host name in quotes, like \"chat.example.com\"")
    v = value.strip().lower()
    if "://" in v:
        v = urlsplit(v).hostname or ""
    try:
        _check_dns(v, value)
    except ValueError:
        raise TableError(f"{where}: origin {value!r} is not a host name (write it like \"chat.example.com\")") \
            from None
    return v


_SERVICE_KEYS = {"id", "name", "origins", "evidence", "confidence", "opt_in", "why", "hosts"}
_HOST_KEYS = {"host", "kind", "shapes", "declared"}
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def _strings(v: Any, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TableError(f"{where}: must be a list of strings, like [\"a\", \"b\"]")
    return tuple(v)


def parse_services(doc: Mapping[str, Any], source: str, *, user: bool) -> tuple[Service, ...]:
    """Validate a parsed table or user file; TableError names the service and key at fault."""
    raw = doc.get("service")
    allowed_top = {"service"} | ({"schema", "version"})
    unknown_top = set(doc) - allowed_top
    if unknown_top:
        raise TableError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown_top))} "
                         "(expected [[service]] tables)")
    if doc.get("schema", 1) != 1:
        raise TableError(f"{source}: schema {doc.get('schema')!r} is not supported (this exifguard reads schema 1)")
    if not isinstance(raw, list) or not raw:
        raise TableError(f"{source}: no services; add at least one [[service]] with an id and [[service.hosts]]")
    out: list[Service] = []
    seen: set[str] = set()
    for i, s in enumerate(raw, 1):
        where = f"{source}: service #{i}"
        if not isinstance(s, dict):
            raise TableError(f"{where}: must be a [[service]] table")
        sid = s.get("id")
        if not isinstance(sid, str) or not _ID.match(sid):
            raise TableError(f"{where}: needs id = \"...\" (lower-case letters, digits and hyphens, "
                             "at most 40)")
        where = f"{source}: service {sid!r}"
        if sid in seen:
            raise TableError(f"{where}: the id is used twice")
        seen.add(sid)
        unknown = set(s) - _SERVICE_KEYS
        if unknown:
            raise TableError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(_SERVICE_KEYS))})")
        name = s.get("name", sid)
        if not isinstance(name, str) or not name.strip():
            raise TableError(f"{where}: name must be a non-empty string")
        origins = tuple(_origin_name(o, f"{where}, origins") for o in _strings(s.get("origins"), f"{where}, origins"))
        conf = s.get("confidence", "" if user else None)
        if not user and conf not in CONFIDENCE:
            raise TableError(f"{where}: confidence must be one of {', '.join(CONFIDENCE)}")
        if user and conf not in ("",) + CONFIDENCE:
            raise TableError(f"{where}: confidence must be one of {', '.join(CONFIDENCE)} (or left out)")
        opt_in = s.get("opt_in", False)
        if not isinstance(opt_in, bool):
            raise TableError(f"{where}: opt_in must be true or false")
        hosts_raw = s.get("hosts")
        if not isinstance(hosts_raw, list) or not hosts_raw:
            raise TableError(f"{where}: needs at least one host: [[service.hosts]] with host = \"...\"")
        rules: list[HostRule] = []
        for j, h in enumerate(hosts_raw, 1):
            hw = f"{where}, host #{j}"
            if not isinstance(h, dict):
                raise TableError(f"{hw}: must be a [[service.hosts]] table with host = \"...\"")
            unknown = set(h) - _HOST_KEYS
            if unknown:
                raise TableError(f"{hw}: unknown key(s) {', '.join(sorted(unknown))} "
                                 f"(known: {', '.join(sorted(_HOST_KEYS))})")
            host = h.get("host")
            if not isinstance(host, str):
                raise TableError(f"{hw}: needs host = \"example.com\" (or \"*.example.com\")")
            try:
                parse_host_rule(host)
            except ValueError as exc:
                raise TableError(f"{hw}: {exc}") from None
            kind = h.get("kind", "dedicated")
            if kind not in (Kind.DEDICATED.value, Kind.SHARED.value):
                raise TableError(f"{hw}: kind must be \"dedicated\" (every request checked) or \"shared\" "
                                 "(checked only for requests from an AI app's Origin)")
            if kind == Kind.SHARED.value and user and not origins:
                raise TableError(f"{hw}: a shared host is checked only for requests from an AI app; give "
                                 "the service its web origins, e.g. origins = [\"chat.example.com\"]")
            rules.append(HostRule(host.strip().lower(), Kind(kind), _strings(h.get("shapes"), f"{hw}, shapes"),
                                  _strings(h.get("declared"), f"{hw}, declared")))
        for key in ("evidence", "why"):
            if not isinstance(s.get(key, ""), str):
                raise TableError(f"{where}: {key} must be a string")
        out.append(Service(sid, name.strip(), tuple(rules), origins, s.get("evidence", ""), conf or "",
                           opt_in, s.get("why", "") or ("added by the user" if user else ""), source))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def load_table() -> Table:
    """The service table shipped with exifguard (parsed once)."""
    text = resources.files(__package__).joinpath(TABLE_RESOURCE).read_text(encoding="utf-8")
    doc = tomllib.loads(text)
    version = doc.get("version")
    if not isinstance(version, str):
        raise TableError(f"{TABLE_RESOURCE}: needs version = \"YYYY-MM-DD\"")
    return Table(version, parse_services(doc, "table", user=False))


def load_user_services(path: str | Path) -> tuple[Service, ...]:
    """A person's own services, in the table's format:

        [[service]]
        id = "my-ai"                       # lower-case letters, digits, hyphens
        origins = ["chat.my-ai.example"]   # its web app (needed for shared hosts)
        [[service.hosts]]
        host = "uploads.my-ai.example"     # or "*.my-ai.example", "up-*.my-ai.example"
        kind = "dedicated"                 # or "shared" (checked only from the origins)

    Raises TableError naming the file, the service and the key at fault.
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TableError(f"services file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TableError(f"cannot read services file {p}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TableError(f"services file {p} is not valid TOML: {exc}") from None
    services = parse_services(doc, str(p), user=True)
    builtin = {s.id for s in load_table().services}
    for s in services:
        if s.id in builtin:
            raise TableError(f"{p}: service {s.id!r} is a built-in service id; choose another id "
                             f"(built-in services are enabled with --add-service)")
    return services


def default_entries(table: Table | None = None) -> tuple[HostEntry, ...]:
    table = table or load_table()
    return tuple(e for s in table.services if not s.opt_in for e in s.entries())


def all_origins(services: Iterable[Service]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for s in services:
        for o in s.origins:
            out[o] = None
    return tuple(out)


#: The maintained default list: every non-opt-in host of the table.
DEFAULT_HOSTS: tuple[HostEntry, ...] = default_entries()

#: Web origins of AI apps: an upload to a shared host whose Origin or Referer is one of
#: these (or a subdomain) is treated as an AI upload.  Opt-in services' origins count too:
#: they only make more requests get checked.
AI_APP_ORIGINS: tuple[str, ...] = all_origins(load_table().services)


@dataclass(frozen=True, slots=True)
class Match:
    entry: HostEntry
    reason: str
    """"host" (dedicated host) or "origin" (shared storage, AI Origin/Referer)."""


@dataclass(frozen=True)
class HostSet:
    entries: tuple[HostEntry, ...]
    origins: tuple[str, ...] = AI_APP_ORIGINS
    services: tuple[Service, ...] = field(default=(), compare=False)
    """Services whose hosts were added beyond the defaults (opt-in or user file)."""

    @classmethod
    def build(cls, extra: Iterable[str] = (), remove: Iterable[str] = (),
              base: Iterable[HostEntry] | None = None) -> "HostSet":
        """The default list plus additions, minus removals.

        `extra` items: a host rule ("example.com", "*.example.com", "up-*.example.com"),
        "service:ID" (a table service, e.g. the opt-in grok-x) or "file:PATH" (a user
        services file).  `remove` takes a host rule as the table spells it ("claude.ai",
        "*.blob.core.windows.net" or just "blob.core.windows.net") or "service:ID";
        removing something not in the list is an error so a typo does not silently leave
        a host intercepted.
        """
        table = load_table()
        entries: dict[tuple[str, str | None], HostEntry] = {
            e.key: e for e in (DEFAULT_HOSTS if base is None else base)}
        origins: dict[str, None] = dict.fromkeys(AI_APP_ORIGINS)
        added: list[Service] = []
        for spec in extra:
            spec = spec.strip()
            if spec.startswith(SERVICE_PREFIX):
                sid = spec[len(SERVICE_PREFIX):].strip().lower()
                svc = table.get(sid)
                if svc is None:
                    opt = ", ".join(s.id for s in table.services if s.opt_in)
                    raise ValueError(f"unknown service {sid!r} (opt-in services: {opt}; "
                                     "`exifguard hosts --all` lists every id)")
                services = (svc,)
            elif spec.startswith(FILE_PREFIX):
                services = load_user_services(spec[len(FILE_PREFIX):])
            else:
                dom, sub, label = parse_host_rule(spec)
                old = entries.get((dom, label))
                entries[(dom, label)] = HostEntry(dom, "user", Kind.DEDICATED,
                                                  sub or (old.subdomains if old else False), label, "user",
                                                  "added with --add-host")
                continue
            for svc in services:
                added.append(svc)
                origins.update(dict.fromkeys(svc.origins))
                for e in svc.entries():
                    old = entries.get(e.key)
                    if old is not None and old.kind is Kind.DEDICATED and e.kind is Kind.SHARED:
                        continue  # never weaken a dedicated rule to an Origin-gated one
                    entries[e.key] = e
        for spec in remove:
            spec = spec.strip()
            if spec.startswith(SERVICE_PREFIX):
                sid = spec[len(SERVICE_PREFIX):].strip().lower()
                keys = [k for k, e in entries.items() if e.service_id == sid]
                if not keys:
                    raise ValueError(f"cannot remove {spec!r}: no host of that service is in the host list")
                for k in keys:
                    del entries[k]
                continue
            dom, _sub, label = parse_host_rule(spec)
            if (dom, label) not in entries:
                raise ValueError(f"cannot remove {spec!r}: it is not in the host list")
            del entries[(dom, label)]
        return cls(tuple(entries.values()), tuple(origins), tuple(added))

    def lookup(self, host: str) -> HostEntry | None:
        h = normalise_host(host)
        best: HostEntry | None = None
        best_rank = (-1, -1)
        for e in self.entries:  # most specific match wins: longer domain, then exact > label > subtree
            if not e.matches(h):
                continue
            rank = (len(e.domain), 2 if (e.label is None and h == e.domain) else 1 if e.label else 0)
            if rank > best_rank:
                best, best_rank = e, rank
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
        """(name, subdomains) for the PAC's name lists (label rules are in `pac_patterns`)."""
        return [(e.domain, e.subdomains) for e in self.entries if e.label is None]

    def pac_patterns(self) -> list[str]:
        return [rx for e in self.entries if (rx := e.pac_regex()) is not None]

    def domains(self) -> list[str]:
        """DNS names for the CA's permitted subtrees (a subtree also covers subdomains)."""
        out: list[str] = []
        for e in sorted(self.entries, key=lambda e: len(e.domain)):
            if not any(e.domain == d or e.domain.endswith("." + d) for d in out):
                out.append(e.domain)
        return sorted(out)

    def uncovered(self, permitted: Iterable[str]) -> list[HostEntry]:
        """Entries a CA with these permitted DNS subtrees cannot serve (for `exifguard run`)."""
        doms = [d.lower().rstrip(".") for d in permitted]
        return [e for e in self.entries
                if not any(e.domain == d or e.domain.endswith("." + d) for d in doms)]


# ---- listing ------------------------------------------------------------------------------
def describe(hosts: HostSet, *, include_opt_in: bool = True) -> dict[str, Any]:
    """Every decrypted host with its service, match rule and reason (`exifguard hosts --json`)."""
    table = load_table()
    by_id = {s.id: s for s in table.services}
    by_id.update({s.id: s for s in hosts.services})
    rows = []
    for e in sorted(hosts.entries, key=lambda e: (e.service.lower(), e.spec)):
        svc = by_id.get(e.service_id)
        rule = next((r for r in svc.hosts if r.host == e.spec), None) if svc else None
        if e.kind is Kind.SHARED:
            match = "only requests whose Origin/Referer is an AI app" + (
                f" (this service's: {', '.join(svc.origins)})" if svc and svc.origins else "")
        else:
            match = "every request"
        rows.append({
            "host": e.spec,
            "service": e.service,
            "service_id": e.service_id or None,
            "kind": e.kind.value,
            "matches": ("exactly this name" if e.label is None and not e.subdomains else
                        "this name and every subdomain" if e.label is None else
                        f"one label matching {e.label!r} under {e.domain}"),
            "checked": match,
            "why": e.why or (svc.why if svc else ""),
            "shapes": list(rule.shapes) if rule else [],
            "declared": list(rule.declared) if rule else [],
            "evidence": svc.evidence if svc else "",
            "confidence": svc.confidence if svc else "",
            "source": svc.source if svc else "command line",
        })
    out: dict[str, Any] = {"table_version": table.version, "hosts": rows, "ca_domains": hosts.domains(),
                           "origins": list(hosts.origins)}
    if include_opt_in:
        enabled = {e.service_id for e in hosts.entries}
        out["opt_in"] = [{"id": s.id, "service": s.name, "hosts": [r.host for r in s.hosts],
                          "why": s.why, "enabled": s.id in enabled}
                         for s in table.services if s.opt_in]
    return out
