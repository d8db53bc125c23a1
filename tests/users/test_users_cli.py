"""`python -m cloudia.users` against a real moto server: what an operator types, what it prints, what
happens to the pool, and the exit codes."""
from __future__ import annotations

import json
import os
import re
import string
import subprocess
import sys

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from cloudia import users
from cloudia.auth import user_pool_name
from tests.users.conftest import make_pool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NEW_PASSWORD = "Chosen-By-Alice-42"


def run(pool, capsys, *argv: str) -> tuple[int, str, str]:
    """The CLI in this process, pointed at the emulator with --endpoint-url (the pool found by name)."""
    code = users.main([*argv, "--endpoint-url", pool.endpoint])
    out, err = capsys.readouterr()
    return code, out, err


def temporary_password(output: str) -> str:
    [password] = re.findall(r"^temporary password: (\S+)$", output, re.MULTILINE)
    return password


def sign_in(pool, username: str, password: str) -> dict:
    return pool.cognito.initiate_auth(ClientId=pool.client_id, AuthFlow="USER_PASSWORD_AUTH",
                                      AuthParameters={"USERNAME": username, "PASSWORD": password})


def invite(pool, capsys, username: str) -> str:
    code, out, err = run(pool, capsys, "invite", username, "--email", f"{username}@example.com")
    assert code == 0, err
    return temporary_password(out)


def test_invite_prints_a_temporary_password_that_leads_to_the_new_password_challenge(pool, capsys):
    # WHEN an operator invites alice against the emulator, giving no password
    code, out, err = run(pool, capsys, "invite", "alice", "--email", "alice@example.com")

    # THEN it exits 0 and prints a generated temporary password meeting a strict policy
    assert code == 0, err
    password = temporary_password(out)
    assert len(password) >= 12 and all(any(c in cls for c in password) for cls in (
        string.ascii_uppercase, string.ascii_lowercase, string.digits, users.PASSWORD_SYMBOLS))
    assert "FORCE_CHANGE_PASSWORD" in out and "NEW_PASSWORD_REQUIRED" in out
    # AND alice is in the pool with a verified email, waiting to change her password
    user = pool.cognito.admin_get_user(UserPoolId=pool.pool_id, Username="alice")
    attributes = {a["Name"]: a["Value"] for a in user["UserAttributes"]}
    assert user["UserStatus"] == "FORCE_CHANGE_PASSWORD" and user["Enabled"] is True
    assert attributes["email"] == "alice@example.com" and attributes["email_verified"] == "true"

    # AND signing in with the temporary password asks for a new one, which then signs her in
    challenge = sign_in(pool, "alice", password)
    assert challenge["ChallengeName"] == "NEW_PASSWORD_REQUIRED"
    answer = pool.cognito.respond_to_auth_challenge(
        ClientId=pool.client_id, ChallengeName="NEW_PASSWORD_REQUIRED", Session=challenge["Session"],
        ChallengeResponses={"USERNAME": "alice", "NEW_PASSWORD": NEW_PASSWORD})
    assert answer["AuthenticationResult"]["IdToken"]
    assert sign_in(pool, "alice", NEW_PASSWORD)["AuthenticationResult"]["AccessToken"]


def test_invite_with_a_given_temporary_password_prints_and_uses_it(pool, capsys):
    code, out, err = run(pool, capsys, "invite", "bob", "--email", "bob@example.com",
                         "--temporary-password", "Given-Temp-123")

    assert code == 0, err
    assert temporary_password(out) == "Given-Temp-123"
    assert sign_in(pool, "bob", "Given-Temp-123")["ChallengeName"] == "NEW_PASSWORD_REQUIRED"


def test_generated_passwords_differ_and_always_hold_every_character_class():
    passwords = {users.generate_password() for _ in range(200)}
    assert len(passwords) == 200
    for password in passwords:
        assert len(password) == users.GENERATED_PASSWORD_LENGTH
        assert any(c.isupper() for c in password) and any(c.islower() for c in password)
        assert any(c.isdigit() for c in password) and any(c in users.PASSWORD_SYMBOLS for c in password)


def test_invite_on_aws_lets_cognito_email_the_password_and_prints_none(monkeypatch, capsys):
    # GIVEN no endpoint URL (AWS), so the pool is looked up as the aws target's; the calls are stubbed
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_COGNITO_IDP", "USER_POOL_ID"):
        monkeypatch.delenv(name, raising=False)
    cognito = boto3.client("cognito-idp", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(cognito)
    stub.add_response("list_user_pools", {"UserPools": [
        {"Id": "eu-west-1_other", "Name": user_pool_name("aws", "prod")},
        {"Id": "eu-west-1_abc", "Name": user_pool_name("aws", "dev")}]}, {"MaxResults": users.PAGE_SIZE})
    # Cognito generates the temporary password itself: none is sent, the invitation goes by email.
    stub.add_response("admin_create_user", {"User": {"Username": "carol", "UserStatus": "FORCE_CHANGE_PASSWORD",
                                                     "Enabled": True, "Attributes": []}},
                      {"UserPoolId": "eu-west-1_abc", "Username": "carol", "DesiredDeliveryMediums": ["EMAIL"],
                       "UserAttributes": [{"Name": "email", "Value": "carol@example.com"},
                                          {"Name": "email_verified", "Value": "true"}]})
    seen = {}

    def stubbed_client(endpoint, region):
        seen["endpoint"] = endpoint
        return cognito

    monkeypatch.setattr(users, "cognito_client", stubbed_client)

    with stub:
        code = users.main(["invite", "carol", "--email", "carol@example.com"])
        stub.assert_no_pending_responses()

    out, err = capsys.readouterr()
    assert code == 0, err
    assert seen["endpoint"] is None
    assert "temporary password:" not in out and "emails carol@example.com" in out


def test_list_shows_each_user_with_status_enabled_and_email_as_a_table_and_as_json(pool, capsys):
    # GIVEN one invited user, one who changed her password, and a disabled one
    invite(pool, capsys, "dave")
    pool.cognito.admin_create_user(UserPoolId=pool.pool_id, Username="erin", TemporaryPassword="Temp-Pass-123",
                                   UserAttributes=[{"Name": "email", "Value": "erin@example.com"}])
    pool.cognito.admin_set_user_password(UserPoolId=pool.pool_id, Username="erin", Password=NEW_PASSWORD,
                                         Permanent=True)
    invite(pool, capsys, "frank")
    pool.cognito.admin_disable_user(UserPoolId=pool.pool_id, Username="frank")

    # WHEN they are listed as a table
    code, out, err = run(pool, capsys, "list")

    # THEN each is on its row with status, enabled and email
    assert code == 0, err
    lines = out.splitlines()
    assert "3 users" in lines[0] and pool.pool_id in lines[0]
    assert lines[1].split()[:5] == ["USERNAME", "STATUS", "ENABLED", "EMAIL", "CREATED"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["dave"][1:4] == ["FORCE_CHANGE_PASSWORD", "yes", "dave@example.com"]
    assert rows["erin"][1:4] == ["CONFIRMED", "yes", "erin@example.com"]
    assert rows["frank"][1:4] == ["FORCE_CHANGE_PASSWORD", "no", "frank@example.com"]

    # AND as JSON, one object per line, with the user id the tokens carry (sub)
    code, out, err = run(pool, capsys, "list", "--json")
    assert code == 0, err
    listed = {record["username"]: record for record in map(json.loads, out.splitlines())}
    assert set(listed) == {"dave", "erin", "frank"}
    assert listed["erin"]["status"] == "CONFIRMED" and listed["frank"]["enabled"] is False
    assert listed["dave"]["email"] == "dave@example.com" and listed["dave"]["created"].startswith("20")
    sub = {a["Name"]: a["Value"] for a in pool.cognito.admin_get_user(
        UserPoolId=pool.pool_id, Username="dave")["UserAttributes"]}["sub"]
    assert listed["dave"]["sub"] == sub


def test_list_reads_every_page_of_users(pool, capsys, monkeypatch):
    monkeypatch.setattr(users, "PAGE_SIZE", 2)
    for n in range(5):
        pool.cognito.admin_create_user(UserPoolId=pool.pool_id, Username=f"user{n}")

    code, out, err = run(pool, capsys, "list", "--json")

    assert code == 0, err
    assert [json.loads(line)["username"] for line in out.splitlines()] == [f"user{n}" for n in range(5)]


def test_disable_stops_sign_in_and_enable_restores_it(pool, capsys):
    password = invite(pool, capsys, "gina")

    code, out, err = run(pool, capsys, "disable", "gina")

    assert code == 0, err
    assert "disabled gina" in out
    assert pool.cognito.admin_get_user(UserPoolId=pool.pool_id, Username="gina")["Enabled"] is False
    # moto, like Cognito, refuses a disabled user's sign-in.
    with pytest.raises(ClientError) as refused:
        sign_in(pool, "gina", password)
    assert refused.value.response["Error"]["Code"] == "NotAuthorizedException"

    code, out, err = run(pool, capsys, "enable", "gina")

    assert code == 0, err
    assert "enabled gina" in out
    assert pool.cognito.admin_get_user(UserPoolId=pool.pool_id, Username="gina")["Enabled"] is True
    assert sign_in(pool, "gina", password)["ChallengeName"] == "NEW_PASSWORD_REQUIRED"


def test_delete_refuses_without_yes_and_removes_the_user_with_it(pool, capsys):
    invite(pool, capsys, "hank")

    code, out, err = run(pool, capsys, "delete", "hank")

    assert code == 2
    assert "--yes" in err and "refusing" in err
    assert pool.cognito.admin_get_user(UserPoolId=pool.pool_id, Username="hank")["Username"] == "hank"

    code, out, err = run(pool, capsys, "delete", "hank", "--yes")

    assert code == 0, err
    assert "deleted hank" in out
    with pytest.raises(ClientError) as gone:
        pool.cognito.admin_get_user(UserPoolId=pool.pool_id, Username="hank")
    assert gone.value.response["Error"]["Code"] == "UserNotFoundException"


@pytest.mark.parametrize("command", [["disable"], ["enable"], ["delete", "--yes"]])
def test_an_unknown_user_is_a_clear_error_with_exit_2(pool, capsys, command):
    code, out, err = run(pool, capsys, command[0], "ghost", *command[1:])

    assert code == 2
    assert "no user 'ghost'" in err and pool.pool_id in err and "Traceback" not in err


def test_a_cognito_refusal_prints_its_message_and_exits_1(pool, capsys):
    invite(pool, capsys, "ivy")

    code, out, err = run(pool, capsys, "invite", "ivy", "--email", "ivy@example.com")

    assert code == 1
    assert "UsernameExistsException" in err and "AdminCreateUser" in err


def test_the_pool_is_found_by_target_and_stage_or_taken_from_the_id(pool, capsys, monkeypatch):
    # GIVEN the prod pool beside the dev one, and a pool with some other name
    prod_id = pool.cognito.create_user_pool(PoolName=user_pool_name("local", "prod"))["UserPool"]["Id"]
    other_id = pool.cognito.create_user_pool(PoolName="someone-elses")["UserPool"]["Id"]

    # WHEN users are invited by stage, by --user-pool-id and by $USER_POOL_ID
    assert run(pool, capsys, "invite", "dev-user", "--email", "d@example.com")[0] == 0
    assert run(pool, capsys, "invite", "prod-user", "--email", "p@example.com", "--stage", "prod")[0] == 0
    assert run(pool, capsys, "invite", "by-id", "--email", "i@example.com", "--user-pool-id", other_id)[0] == 0
    monkeypatch.setenv("USER_POOL_ID", other_id)
    assert run(pool, capsys, "invite", "by-env", "--email", "e@example.com")[0] == 0

    # THEN each landed in its own pool
    def names(pool_id):
        return {u["Username"] for u in pool.cognito.list_users(UserPoolId=pool_id)["Users"]}
    assert names(pool.pool_id) == {"dev-user"}
    assert names(prod_id) == {"prod-user"}
    assert names(other_id) == {"by-id", "by-env"}


def test_the_pool_is_found_past_the_first_page_of_pools(pool, capsys, monkeypatch):
    monkeypatch.setattr(users, "PAGE_SIZE", 2)
    pool.cognito.delete_user_pool(UserPoolId=pool.pool_id)
    for n in range(5):
        pool.cognito.create_user_pool(PoolName=f"filler-{n}")
    wanted = make_pool(pool.cognito)

    code, out, err = run(pool, capsys, "invite", "jill", "--email", "jill@example.com")

    assert code == 0, err
    assert pool.cognito.admin_get_user(UserPoolId=wanted, Username="jill")["Username"] == "jill"


def test_two_pools_of_that_name_or_none_is_a_clear_error(pool, capsys):
    twin = make_pool(pool.cognito)

    code, out, err = run(pool, capsys, "list")

    assert code == 2
    assert "2 user pools are named 'cloudia-local-dev-users'" in err
    assert pool.pool_id in err and twin in err and "--user-pool-id" in err

    code, out, err = run(pool, capsys, "list", "--stage", "prod")

    assert code == 2
    assert "no user pool named 'cloudia-local-prod-users'" in err


def test_with_the_endpoint_in_the_environment_the_target_defaults_to_local(pool, capsys, monkeypatch):
    # GIVEN the emulator reached only through AWS_ENDPOINT_URL, the target defaults to local ...
    monkeypatch.setenv("AWS_ENDPOINT_URL", pool.endpoint)
    assert users.main(["list"]) == 0
    assert "cloudia-local-dev-users" in capsys.readouterr().out
    # ... and an explicit --target aws looks for the aws target's pool
    assert users.main(["list", "--target", "aws"]) == 2
    assert "no user pool named 'cloudia-aws-dev-users'" in capsys.readouterr().err


def test_as_a_module_with_the_endpoint_in_the_environment(pool, capsys):
    invite(pool, capsys, "kim")
    env = dict(os.environ, AWS_ENDPOINT_URL=pool.endpoint)

    result = subprocess.run([sys.executable, "-m", "cloudia.users", "list"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert re.search(r"^kim\s+FORCE_CHANGE_PASSWORD\s+yes\s+kim@example.com", result.stdout, re.MULTILINE)


def test_the_make_target_runs_the_module_with_args():
    result = subprocess.run(["make", "-n", "users", "ARGS=list --json"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "-m cloudia.users list --json" in result.stdout
