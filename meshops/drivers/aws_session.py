"""One boto3 session for all of a command's AWS clients (Route53, ELB, STS).

Each boto3 session resolves the credential chain on its own (an SSO cache, or in CI an
AssumeRoleWithWebIdentity round trip) and its loader parses the endpoint and service models
on its own: three sessions cost a switchover ~0.2 s of start-up for nothing. boto3 documents
sessions as not thread-safe and clients as thread-safe, so clients are made under a lock and
then used freely.
"""

from __future__ import annotations

import threading
from typing import Any


class AwsSession:
    def __init__(self, *, profile: str | None = None) -> None:
        self.profile = profile
        self._session: Any = None
        self._lock = threading.Lock()

    @property
    def session(self) -> Any:
        with self._lock:
            return self._boto()

    def _boto(self) -> Any:
        if self._session is None:
            import boto3

            self._session = boto3.session.Session(profile_name=self.profile)
        return self._session

    def client(self, service: str, **kwargs: Any) -> Any:
        with self._lock:
            return self._boto().client(service, **kwargs)
