"""`python -m cloudia.users`: invite, list, disable, enable and delete the users of the Cognito user pool.

    python -m cloudia.users invite USERNAME --email EMAIL [--temporary-password P]
    python -m cloudia.users list [--json]
    python -m cloudia.users disable|enable USERNAME
    python -m cloudia.users delete USERNAME --yes

The same commands work against AWS (boto3's usual credentials and region) and against the local
emulator (`--endpoint-url http://localhost:4566`, or AWS_ENDPOINT_URL). The pool is --user-pool-id or
$USER_POOL_ID; without either it is found by name, `cloudia.auth.user_pool_name(target, stage)`, with
--target (default `local` when an endpoint URL is given, else `aws`) and --stage (default `dev`).

`invite` creates the user with a verified email and status FORCE_CHANGE_PASSWORD: at first sign-in they
get the NEW_PASSWORD_REQUIRED challenge and choose their own password. On AWS, Cognito emails the
invitation with a temporary password. An emulator sends no mail, so there (or when
--temporary-password is given) the temporary password is printed for the operator to hand over; one
is generated when none is given.

Exit codes: 0 done; 1 a Cognito call failed (its message is printed); 2 bad input (no such pool, several
pools of that name, no such user, `delete` without --yes).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import string
import sys
from dataclasses import dataclass
from datetime import datetime, timezone

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from cloudia.auth import user_pool_name
from cloudia.aws import client_config

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
TARGETS, STAGES = ("aws", "local"), ("dev", "prod")
# What the emulator is reached with when nothing else is configured (moto accepts any credentials).
EMULATOR_REGION = "us-east-1"
EMULATOR_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
CALL_TIMEOUT_MS = 10_000
MAX_ATTEMPTS = 3
# A generated temporary password meets the strictest Cognito policy (upper, lower, digit, symbol)
# at this length; the symbols are Cognito's allowed ones that need no quoting when handed over.
GENERATED_PASSWORD_LENGTH = 16
PASSWORD_SYMBOLS = "-_.@#%+="
PAGE_SIZE = 60  # the largest page ListUserPools and ListUsers return


class UsersError(Exception):
    """Bad input the operator can fix (no such pool or user, an ambiguous pool name); says what to do."""


@dataclass(frozen=True)
class Pool:
    pool_id: str
    name: str | None = None

    def describe(self) -> str:
        return f"{self.name} ({self.pool_id})" if self.name else self.pool_id


@dataclass(frozen=True)
class User:
    username: str
    status: str
    enabled: bool
    email: str
    created: datetime | None
    sub: str

    @classmethod
    def from_cognito(cls, record: dict) -> "User":
        attributes = {a["Name"]: a["Value"] for a in record.get("Attributes") or record.get("UserAttributes") or []}
        created = record.get("UserCreateDate")
        if isinstance(created, datetime):
            created = created.astimezone(timezone.utc)
        return cls(username=record["Username"], status=record.get("UserStatus", "?"),
                   enabled=bool(record.get("Enabled", True)), email=attributes.get("email", ""),
                   created=created if isinstance(created, datetime) else None, sub=attributes.get("sub", ""))

    def created_text(self) -> str:
        return self.created.isoformat(timespec="seconds") if self.created else ""

    def as_dict(self) -> dict:
        return {"username": self.username, "status": self.status, "enabled": self.enabled,
                "email": self.email, "created": self.created_text(), "sub": self.sub}


# ---- logic -------------------------------------------------------------------------------------

def endpoint_url(given: str | None) -> str | None:
    """The endpoint the client talks to: the option, else boto3's own environment variables."""
    return given or os.environ.get("AWS_ENDPOINT_URL_COGNITO_IDP") or os.environ.get("AWS_ENDPOINT_URL") or None


def cognito_client(endpoint: str | None, region: str | None):
    """A cognito-idp client; against an emulator, a region and dummy credentials when none are set."""
    session = boto3.session.Session(region_name=region)
    extra = {}
    if endpoint:
        if not session.region_name:
            session = boto3.session.Session(region_name=EMULATOR_REGION)
        if session.get_credentials() is None:
            extra = dict(EMULATOR_CREDENTIALS)
    return session.client("cognito-idp", endpoint_url=endpoint,
                          config=client_config(CALL_TIMEOUT_MS, MAX_ATTEMPTS), **extra)


def find_pool(cognito, name: str) -> Pool:
    """The one user pool called `name`; a UsersError when there is none or more than one."""
    matches = []
    for page in cognito.get_paginator("list_user_pools").paginate(MaxResults=PAGE_SIZE):
        matches += [p["Id"] for p in page.get("UserPools", []) if p.get("Name") == name]
    region = cognito.meta.region_name
    if not matches:
        raise UsersError(f"no user pool named {name!r} in {region} ({cognito.meta.endpoint_url}): is the stack "
                         "deployed (or `make up` running)? Check --target/--stage, or give --user-pool-id")
    if len(matches) > 1:
        raise UsersError(f"{len(matches)} user pools are named {name!r} in {region}: {', '.join(sorted(matches))}; "
                         "give the one you mean with --user-pool-id")
    return Pool(matches[0], name)


def resolve_pool(cognito, pool_id: str | None, target: str, stage: str) -> Pool:
    if pool_id:
        return Pool(pool_id)
    return find_pool(cognito, user_pool_name(target, stage))


def generate_password(length: int = GENERATED_PASSWORD_LENGTH) -> str:
    """A random password with at least one upper-case letter, lower-case letter, digit and symbol."""
    classes = [string.ascii_uppercase, string.ascii_lowercase, string.digits, PASSWORD_SYMBOLS]
    alphabet = "".join(classes)
    chars = [secrets.choice(c) for c in classes] + [secrets.choice(alphabet) for _ in range(length - len(classes))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def invite(cognito, pool: Pool, username: str, email: str, temporary_password: str | None) -> User:
    params = {
        "UserPoolId": pool.pool_id,
        "Username": username,
        "UserAttributes": [{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}],
        "DesiredDeliveryMediums": ["EMAIL"],
    }
    if temporary_password:
        params["TemporaryPassword"] = temporary_password
    return User.from_cognito(cognito.admin_create_user(**params)["User"])


def list_users(cognito, pool: Pool) -> list[User]:
    users = []
    for page in cognito.get_paginator("list_users").paginate(UserPoolId=pool.pool_id, Limit=PAGE_SIZE):
        users += [User.from_cognito(record) for record in page.get("Users", [])]
    return sorted(users, key=lambda u: u.username)


def _on_user(call, pool: Pool, username: str) -> None:
    """One admin call on one user; a missing user is bad input, not a failed call."""
    try:
        call(UserPoolId=pool.pool_id, Username=username)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "UserNotFoundException":
            raise UsersError(f"no user {username!r} in pool {pool.describe()}") from None
        raise


# ---- command line ------------------------------------------------------------------------------

def _email(text: str) -> str:
    local, _, domain = text.partition("@")
    if not local or "." not in domain:
        raise argparse.ArgumentTypeError(f"not an email address: {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--user-pool-id", help="the pool (default: $USER_POOL_ID, else found by name)")
    connection.add_argument("--target", choices=TARGETS,
                            help="whose pool to find by name (default: local with an endpoint URL, else aws)")
    connection.add_argument("--stage", choices=STAGES, default="dev", help="(default: %(default)s)")
    connection.add_argument("--endpoint-url",
                            help="an emulator, e.g. http://localhost:4566 (default: $AWS_ENDPOINT_URL)")
    connection.add_argument("--region", help="(default: boto3's, e.g. $AWS_REGION; us-east-1 for an emulator)")

    parser = argparse.ArgumentParser(
        prog="python -m cloudia.users",
        description="Invite, list, disable, enable and delete the users of the chat's Cognito user pool.",
        epilog="The pool is --user-pool-id, $USER_POOL_ID, or the one named "
               f"{user_pool_name('TARGET', 'STAGE')!r}. Exit codes: 0 done, 1 a Cognito call failed, "
               "2 bad input (no such pool or user, several pools of that name, delete without --yes).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{invite,list,disable,enable,delete}")

    inviting = commands.add_parser("invite", parents=[connection],
                                   help="create a user who must set a new password at first sign-in")
    inviting.add_argument("username")
    inviting.add_argument("--email", required=True, type=_email, help="where Cognito sends the invitation")
    inviting.add_argument("--temporary-password", metavar="P",
                          help="use (and print) this one instead of Cognito's; generated against an emulator")

    listing = commands.add_parser("list", parents=[connection], help="the pool's users: status, enabled, email")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    for name, text in (("disable", "stop a user from signing in (they stay in the pool)"),
                       ("enable", "let a disabled user sign in again")):
        commands.add_parser(name, parents=[connection], help=text).add_argument("username")
    deleting = commands.add_parser("delete", parents=[connection], help="remove a user for good (needs --yes)")
    deleting.add_argument("username")
    deleting.add_argument("--yes", action="store_true", help="really delete (nothing is asked)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    endpoint = endpoint_url(args.endpoint_url)
    target = args.target or ("local" if endpoint else "aws")
    if args.command == "delete" and not args.yes:
        print(f"refusing to delete {args.username!r} without --yes (deleting cannot be undone; "
              "`disable` keeps the user)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        cognito = cognito_client(endpoint, args.region)
        pool = resolve_pool(cognito, args.user_pool_id or os.environ.get("USER_POOL_ID"), target, args.stage)
        if args.command == "invite":
            return _invite(cognito, pool, args, emulator=bool(endpoint))
        if args.command == "list":
            return _list(cognito, pool, args)
        return _change(cognito, pool, args.command, args.username)
    except UsersError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NoRegionError:
        print("error: no AWS region: give --region or set AWS_REGION", file=sys.stderr)
        return EXIT_FAILED
    except ClientError as error:
        # Cognito said no (user exists, password policy, permission): its message, not a traceback.
        detail = error.response.get("Error", {})
        print(f"error: Cognito {error.operation_name} failed: {detail.get('Code', '?')}: "
              f"{detail.get('Message', error)}", file=sys.stderr)
        return EXIT_FAILED
    except BotoCoreError as error:
        # No credentials, no network.
        print(f"error: Cognito call failed: {error}", file=sys.stderr)
        return EXIT_FAILED


def _invite(cognito, pool: Pool, args, emulator: bool) -> int:
    password = args.temporary_password or (generate_password() if emulator else None)
    user = invite(cognito, pool, args.username, args.email, password)
    print(f"invited {user.username} <{args.email}> to pool {pool.describe()}: status {user.status}")
    if emulator:
        print("the emulator sends no email: hand the temporary password over yourself")
    else:
        print(f"Cognito emails {args.email} the invitation with a temporary password")
    if password:
        print(f"temporary password: {password}")
    print("at first sign-in they must choose a new password (NEW_PASSWORD_REQUIRED)")
    return EXIT_OK


def _list(cognito, pool: Pool, args) -> int:
    users = list_users(cognito, pool)
    if args.json:
        for user in users:
            print(json.dumps(user.as_dict(), ensure_ascii=False))
        return EXIT_OK
    print(f"pool {pool.describe()}: {len(users)} users")
    if users:
        rows = [("USERNAME", "STATUS", "ENABLED", "EMAIL", "CREATED", "SUB")]
        rows += [(u.username, u.status, "yes" if u.enabled else "no", u.email, u.created_text(), u.sub)
                 for u in users]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return EXIT_OK


def _change(cognito, pool: Pool, command: str, username: str) -> int:
    if command == "disable":
        _on_user(cognito.admin_disable_user, pool, username)
        print(f"disabled {username} in pool {pool.describe()}: they can no longer sign in or refresh their "
              "tokens (a token already issued passes the $connect check until it expires)")
    elif command == "enable":
        _on_user(cognito.admin_enable_user, pool, username)
        print(f"enabled {username} in pool {pool.describe()}: they can sign in again")
    else:
        _on_user(cognito.admin_delete_user, pool, username)
        print(f"deleted {username} from pool {pool.describe()}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
