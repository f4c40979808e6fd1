"""Who AWS thinks we are: ``sts get-caller-identity``, the cheapest call that proves credentials.

A dry run asks it before anything else AWS: expired SSO sessions, a role the OIDC token may
not assume, or no credentials at all show up here with the AWS error, not half-way through a
switchover. The endpoint follows the usual chain (``AWS_ENDPOINT_URL_STS`` or
``AWS_ENDPOINT_URL`` points it at moto in the sandbox).
"""

from __future__ import annotations

from dataclasses import dataclass

from meshops.domain.errors import BadInput
from meshops.drivers.aws_session import AwsSession


@dataclass(frozen=True, kw_only=True)
class CallerIdentity:
    account: str
    arn: str


def caller_identity(*, profile: str | None = None, region: str | None = None, timeout: float = 10.0,
                    aws: AwsSession | None = None) -> CallerIdentity:
    """``aws``: the session the command's other AWS clients use (its credentials resolved once)."""
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        aws = aws or AwsSession(profile=profile)
        sts = aws.client("sts", region_name=region or aws.session.region_name or "us-east-1",
                             config=Config(retries={"total_max_attempts": 2}, connect_timeout=timeout,
                                           read_timeout=timeout, user_agent_extra="meshops"))
        data = sts.get_caller_identity()
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise BadInput(f"AWS: sts get-caller-identity refused: {err.get('Code')}: {err.get('Message')}") from None
    except BotoCoreError as exc:
        raise BadInput(f"AWS: sts get-caller-identity failed: {exc}",
                       hint="no usable AWS credentials? (AWS_PROFILE, SSO login, or the CI's OIDC role)") from None
    return CallerIdentity(account=str(data.get("Account", "")), arn=str(data.get("Arn", "")))
