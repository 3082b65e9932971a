"""pip's package index (PIP_INDEX_URL), its user and password kept out of addresses and messages."""

from __future__ import annotations

import base64
import http.client
import os
import urllib.parse
import urllib.request
from dataclasses import dataclass

DEFAULT_INDEX = "https://pypi.org/simple"
DOWNLOAD_TIMEOUT_S = 30  # per request


@dataclass(frozen=True)
class Index:
    """A simple (PEP 503) index: its address without user and password, and the HTTP Basic
    authorization they make (None where the address has none), sent to its own host alone."""

    url: str
    authorization: str | None = None

    @classmethod
    def parse(cls, given: str) -> Index:
        """The index at `given`, whose user and password (`https://user:token@host/`) are taken
        out of the address."""
        parts = urllib.parse.urlsplit(given)
        userinfo, at, host = parts.netloc.rpartition("@")
        if not at:
            return cls(given)
        user, _, password = userinfo.partition(":")
        pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
        basic = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return cls(urllib.parse.urlunsplit(parts._replace(netloc=host)), basic)

    def open(self, url: str) -> http.client.HTTPResponse:
        """Ask for `url`, with the authorization where `url` is on the index's host."""
        request = urllib.request.Request(url)
        host = urllib.parse.urlsplit(self.url).netloc
        if self.authorization and urllib.parse.urlsplit(url).netloc == host:
            request.add_header("Authorization", self.authorization)
        return urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)

    def shown(self, url: str) -> str:
        """`url` as a message shows it: `***@` where the index's user and password went."""
        parts = urllib.parse.urlsplit(url)
        if self.authorization is None or parts.netloc != urllib.parse.urlsplit(self.url).netloc:
            return url
        return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc))


def pip_index() -> Index:
    """pip's index when PIP_INDEX_URL names one, else PyPI's simple index."""
    return Index.parse(os.environ.get("PIP_INDEX_URL", "").strip() or DEFAULT_INDEX)
