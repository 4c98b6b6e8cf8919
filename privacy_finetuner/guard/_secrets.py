"""Secret and credential rules: token formats, keyed values and credentials in URLs."""

from __future__ import annotations

import re
from collections.abc import Iterator

from privacy_finetuner.guard._model import Finding
from privacy_finetuner.guard._rule import Rule

__all__ = [
    "KEYED_SECRET",
    "NEAR_KEY",
    "NEAR_KEY_ANCHOR",
    "PATH_TOKEN",
    "SECRET_ANCHOR",
    "URL_CRED",
    "SignatureRule",
    "keyed_secret",
    "near_key",
    "path_token",
    "url_cred",
]

# --- secrets and credentials ------------------------------------------------------------------
#: (literal that must occur, pattern) for each token format; the literal gates the regex.
_SIGNATURES: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = tuple(
    (triggers, re.compile(pattern))
    for triggers, pattern in (
        (("AKIA", "ASIA", "AIDA", "AROA", "AGPA", "ANPA"),
         r"(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA)(?<![A-Za-z0-9]....)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"gh[pousr]_[A-Za-z0-9]{36,255}\b"),
        (("github_pat_",), r"github_pat_[A-Za-z0-9_]{22,255}\b"),
        (("xox",), r"xox[abprse]-[A-Za-z0-9\-]{10,255}"),
        (("hooks.slack.com",), r"https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]+"),
        (("_live_", "_test_"), r"(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,255}\b"),
        (("sk-",), r"sk-(?<![\w\-]...)(?:proj-|ant-(?:api\d\d-)?|svcacct-)?[A-Za-z0-9_\-]{20,255}"),
        (("AIza",), r"AIza[0-9A-Za-z_\-]{35}(?![\w\-])"),
        (("glpat-",), r"glpat-[A-Za-z0-9_\-]{20,}\b"),
        (("npm_",), r"npm_[A-Za-z0-9]{36}\b"),
        (("hf_",), r"hf_(?<![\w]...)[A-Za-z0-9]{30,}\b"),
        (("SG.",), r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b"),
        (("eyJ",), r"eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{8,}"),
        (("PRIVATE KEY",),
         r"-----BEGIN[A-Z ]{0,30}PRIVATE KEY( BLOCK)?-----[\s\S]*?-----END[A-Z ]{0,30}PRIVATE KEY( BLOCK)?-----"),
    )
)  # fmt: skip


_SIGNATURE_GATE = re.compile(
    r"AKIA|ASIA|AIDA|AROA|AGPA|ANPA|gh[pousr]_|github_pat_|xox|hooks\.slack|_live_|_test_|sk-|"
    r"AIza|glpat-|npm_|hf_|SG\.|eyJ|PRIVATE KEY"
)


class SignatureRule(Rule):
    """Secrets with a recognisable format (cloud keys, tokens, JWTs, private-key blocks)."""

    def findings(self, text: str, lower: str | None = None) -> Iterator[Finding]:
        if _SIGNATURE_GATE.search(text) is None:
            return
        for triggers, pattern in _SIGNATURES:
            if any(trigger in text for trigger in triggers):
                for match in pattern.finditer(text):
                    yield Finding(match.start(), match.end(), "SECRET", 0.95, self.name)


SECRET_ANCHOR = re.compile(
    r"pass|pwd|secret|client|api|access|auth|refresh|private|token|key|bearer|aws|x-api"
)
KEYED_SECRET = re.compile(
    r"(?i)(?<![\w])(?:password|passwd|passphrase|pwd|pass|secret|client[_\-]?secret|api[_\-]?key|"
    r"apikey|access[_\-]?key|secret[_\-]?key|access[_\-]?token|auth[_\-]?token|refresh[_\-]?token|"
    r"private[_\-]?key|token|aws_secret_access_key|x-api-key)[\"']?[ \t]*(?:[:=]|=>|[ \t]is)[ \t]*"
    r"[\"']?([^\s\"',;{}()<>\[\]]{4,200})"
    r"|(?i:\bbearer)[ \t]+([A-Za-z0-9._~+/\-]{16,}=*)"
)
_NOT_SECRET = frozenset(
    {"required", "null", "none", "true", "false", "redacted", "hidden", "missing", "invalid",
     "expired", "changeme?", "******", "********", "xxxx", "empty", "undefined", "string"}
)  # fmt: skip


def keyed_secret(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    group = 1 if match.group(1) else 2
    value = match.group(group)
    if value.lower() in _NOT_SECRET or value.startswith("[") or set(value) <= {"*", "x", "X"}:
        return None
    return match.start(group), match.end(group), 0.8


URL_CRED = re.compile(
    r"://([^\s:/?#@\"']+:[^\s\"'<>]+)@(?=[\w\-\[])(?![^\s@]*@[\w\-])"
    r"|[?&](?:access_token|token|api_key|apikey|key|password|pwd|secret|sig|signature|auth|"
    r"session|sessionid|client_secret|code|X-Amz-Signature|X-Amz-Credential)=([^&\s#\"'<>]{6,})"
)


def url_cred(match: re.Match[str], text: str) -> tuple[int, int, float]:
    group = 1 if match.group(1) else 2
    return match.start(group), match.end(group), 0.97


#: Path words after which the next segment is a capability token (invite, share, reset links).
_PATH_CUE = (
    r"invite|invites|invitation|share|shared|s|d|dl|download|downloads|reset|reset-password|"
    r"password-reset|verify|verification|confirm|activate|activation|magic|magic-link|login|"
    r"join|access|token|tokens|t|i|unsubscribe|file|files|link|links|doc|docs|secret|key|auth|"
    r"callback|accept|claim|redeem|ticket|p|l|r"
)
PATH_TOKEN = re.compile(
    rf"(?i)(?<=[^/\s])/(?:{_PATH_CUE})/([A-Za-z0-9_\-]{{12,200}})(?=[/?#\s\"'<>),.;]|$)"
    r"|(?<=[^/\s])/([A-Za-z0-9_\-]{20,200})(?=[/?#\s\"'<>),;]|\.(?:\s|$)|$)"
)
_HEX = re.compile(r"[0-9a-fA-F\-]+")
_VERSIONED = re.compile(r"(?i)/(?:commit|commits|tree|blob|compare|releases|tag|tags|sha|rev)/\Z")


def path_token(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    """A capability token as a path segment (``/invite/8fK2xQ9LmZ3pR7tV``), not a slug or a sha."""
    group = 1 if match.group(1) else 2
    value = match.group(group)
    digits = sum(c.isdigit() for c in value)
    letters = sum(c.isalpha() for c in value)
    if not digits or not letters or "--" in value:
        return None
    words = [w for w in re.split(r"[\-_]", value) if w]
    if len(words) > 1 and all(w.isalpha() or w.isdigit() for w in words):
        return None  # "order-12345", "my-post-2024": a slug
    if _HEX.fullmatch(value) and _VERSIONED.search(
        text, max(0, match.start() - 12), match.start() + 1
    ):
        return None  # a commit id in /commit/…
    if group == 2:
        has_upper = any(c.isupper() for c in value)
        has_lower = any(c.islower() for c in value)
        if not (has_upper and has_lower) or digits < 2:
            return None  # a long lower-case or hex segment without a cue: an id, not a secret
    return match.start(group), match.end(group), 0.9 if group == 1 else 0.75


#: A hex (≥ 32) or base64 (≥ 24) run shortly after "key", "token", "secret", "password"…
NEAR_KEY = re.compile(
    r"(?i)(?<![\w])(?:key|token|secret|password|passphrase|credential|credentials|signature|"
    r"auth|apikey|api-key|api_key)s?\b[^\n]{0,24}?(?<![\w+/=])"
    r"([0-9a-f]{32,128}|[A-Za-z0-9+/_\-]{24,256}={0,2})(?![\w+/=])"
)
NEAR_KEY_ANCHOR = re.compile(r"key|token|secret|password|passphrase|credential|signature|auth")
_HASH_WORDS = re.compile(r"(?i)commit|sha|hash|checksum|digest|md5|etag|revision|\brev\b|build")


def near_key(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    value = match.group(1)
    between = text[match.start() : match.start(1)]
    if _HASH_WORDS.search(between) or _HASH_WORDS.search(
        text[max(0, match.start() - 24) : match.start()]
    ):
        return None
    if not any(c.isdigit() for c in value) or value.isdigit():
        return None
    if not _HEX.fullmatch(value) and not (
        any(c.isupper() for c in value) and any(c.islower() for c in value)
    ):
        return None
    return match.start(1), match.end(1), 0.8
