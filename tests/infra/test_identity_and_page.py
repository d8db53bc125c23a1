"""Sign-in (the Cognito user pool and its app client) and the hosted page (S3 + CloudFront): the
`aws` target only; locally `make up` creates the pool and the gateway serves the page."""
import json

import pytest

from tests.infra.test_api_stack import functions

def only(template, kind: str) -> dict:
    [resource] = template.find_resources(kind).values()
    return resource


def user_pool(synth) -> dict:
    return only(synth.templates["state"], "AWS::Cognito::UserPool")


def app_client(synth) -> dict:
    return only(synth.templates["state"], "AWS::Cognito::UserPoolClient")["Properties"]


# --- the user pool ---------------------------------------------------------------------------------

def test_user_pool_is_named_for_the_target_and_stage(aws_synth, aws_prod_synth):
    assert user_pool(aws_synth)["Properties"]["UserPoolName"] == "cloudia-aws-dev-users"
    assert user_pool(aws_prod_synth)["Properties"]["UserPoolName"] == "cloudia-aws-prod-users"


def test_self_sign_up_is_off_by_default_so_an_operator_invites_users(aws_synth):
    assert user_pool(aws_synth)["Properties"]["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True


def test_self_sign_up_is_a_setting():
    from aws_cdk.assertions import Template

    from app import build_app
    from tests.infra.conftest import cdk_context

    app = build_app(cdk_context(target="aws", user_pool_self_sign_up="true"))
    state = Template.from_stack(app.node.find_child("cloudia-aws-dev-state"))
    [pool] = state.find_resources("AWS::Cognito::UserPool").values()
    assert pool["Properties"]["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is False


def test_password_policy_asks_12_characters_of_every_kind(any_aws_synth):
    assert user_pool(any_aws_synth)["Properties"]["Policies"]["PasswordPolicy"] == {
        "MinimumLength": 12, "RequireLowercase": True, "RequireUppercase": True, "RequireNumbers": True,
        "RequireSymbols": True, "TemporaryPasswordValidityDays": 7}


def test_prod_offers_optional_totp_mfa_and_never_sms(aws_prod_synth):
    props = user_pool(aws_prod_synth)["Properties"]
    assert props["MfaConfiguration"] == "OPTIONAL"
    assert props["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]


def test_dev_has_no_mfa(aws_synth):
    props = user_pool(aws_synth)["Properties"]
    assert props["MfaConfiguration"] == "OFF" and "EnabledMfas" not in props


def test_users_sign_in_by_username_and_recover_by_email(any_aws_synth):
    props = user_pool(any_aws_synth)["Properties"]
    assert "UsernameAttributes" not in props and "AliasAttributes" not in props  # the username itself
    assert {"Name": "email", "Required": True, "Mutable": True} in props["Schema"]
    assert props["AutoVerifiedAttributes"] == ["email"]
    assert props["AccountRecoverySetting"]["RecoveryMechanisms"] == [{"Name": "verified_email", "Priority": 1}]


def test_prod_user_pool_is_retained_and_protected_from_deletion(aws_prod_synth):
    pool = user_pool(aws_prod_synth)
    assert (pool["DeletionPolicy"], pool["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert pool["Properties"]["DeletionProtection"] == "ACTIVE"


def test_dev_user_pool_is_destroyed_with_the_stack(aws_synth):
    pool = user_pool(aws_synth)
    assert pool["DeletionPolicy"] == "Delete"
    assert pool["Properties"].get("DeletionProtection", "INACTIVE") == "INACTIVE"


def test_user_pool_logical_ids_are_stable(aws_synth):
    # A new logical ID would replace the pool: every user and password lost, every token refused.
    template = aws_synth.templates["state"]
    assert list(template.find_resources("AWS::Cognito::UserPool")) == ["IdentityUserPool96FE3B9B"]
    assert list(template.find_resources("AWS::Cognito::UserPoolClient")) == ["IdentityUserPoolWebClient274C53C4"]


def test_the_local_target_has_no_user_pool_in_its_stacks(local_synth):
    for template in local_synth.templates.values():
        assert not template.find_resources("AWS::Cognito::UserPool")


# --- the app client --------------------------------------------------------------------------------

def test_app_client_is_public_without_a_secret(any_aws_synth):
    assert app_client(any_aws_synth)["GenerateSecret"] is False


def test_app_client_allows_only_password_sign_in_and_refresh(any_aws_synth):
    client = app_client(any_aws_synth)
    assert sorted(client["ExplicitAuthFlows"]) == ["ALLOW_REFRESH_TOKEN_AUTH", "ALLOW_USER_PASSWORD_AUTH"]
    # no hosted UI, no OAuth redirects to a placeholder URL
    assert client["AllowedOAuthFlowsUserPoolClient"] is False
    assert "CallbackURLs" not in client and "AllowedOAuthFlows" not in client


def test_app_client_hides_who_has_an_account_and_revokes_tokens(any_aws_synth):
    client = app_client(any_aws_synth)
    assert client["PreventUserExistenceErrors"] == "ENABLED"
    assert client["EnableTokenRevocation"] is True


def test_token_lifetimes_are_the_settings(aws_synth):
    client = app_client(aws_synth)
    assert client["TokenValidityUnits"] == {"AccessToken": "minutes", "IdToken": "minutes", "RefreshToken": "minutes"}
    assert (client["IdTokenValidity"], client["AccessTokenValidity"]) == (60, 60)
    assert client["RefreshTokenValidity"] == 30 * 24 * 60


def test_token_lifetimes_follow_an_override():
    from aws_cdk.assertions import Template

    from app import build_app
    from tests.infra.conftest import cdk_context

    app = build_app(cdk_context(target="aws", user_pool_access_token_minutes="5", user_pool_refresh_token_days="1"))
    [client] = Template.from_stack(app.node.find_child("cloudia-aws-dev-state")).find_resources(
        "AWS::Cognito::UserPoolClient").values()
    props = client["Properties"]
    assert (props["IdTokenValidity"], props["AccessTokenValidity"], props["RefreshTokenValidity"]) == (5, 5, 1440)


# --- the functions' environment --------------------------------------------------------------------

@pytest.mark.parametrize("handler", ["authorizer", "connect"])
def test_token_checking_functions_trust_the_stacks_own_pool_and_its_jwks(aws_synth, handler):
    env = functions(aws_synth)[handler]["Environment"]["Variables"]
    assert "IdentityUserPool96FE3B9B" in json.dumps(env["USER_POOL_ID"])
    assert "IdentityUserPoolWebClient274C53C4" in json.dumps(env["USER_POOL_CLIENT_ID"])
    # the key set is always the pool's own: no override on AWS
    assert "COGNITO_JWKS_URL" not in env


def test_no_function_has_a_shared_signing_secret(any_synth):
    for props in functions(any_synth).values():
        env = props["Environment"]["Variables"]
        assert not [name for name in env if name.startswith("AUTH_SECRET")]
    assert not any_synth.templates["api"].find_resources("AWS::SecretsManager::Secret")


def test_local_functions_get_no_pool_from_the_stacks(local_synth):
    # `make up` creates the emulator's pool and adds its ids and JWKS URL to the runtime environment.
    for props in functions(local_synth).values():
        env = props["Environment"]["Variables"]
        assert not {"USER_POOL_ID", "USER_POOL_CLIENT_ID", "COGNITO_JWKS_URL"} & set(env)


# --- the page bucket -------------------------------------------------------------------------------

def buckets(synth) -> dict:
    found = synth.templates["web"].find_resources("AWS::S3::Bucket")
    page = next(v for k, v in found.items() if k.startswith("PageBucket"))
    logs = next(v for k, v in found.items() if k.startswith("PageLogBucket"))
    return {"page": page, "logs": logs}


def bucket_policy(synth, bucket_prefix: str) -> list[dict]:
    for policy in synth.templates["web"].find_resources("AWS::S3::BucketPolicy").values():
        if policy["Properties"]["Bucket"]["Ref"].startswith(bucket_prefix):
            return policy["Properties"]["PolicyDocument"]["Statement"]
    raise AssertionError(f"no policy on {bucket_prefix}")


BLOCK_ALL = {"BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
             "RestrictPublicBuckets": True}


@pytest.mark.parametrize("bucket", ["page", "logs"])
def test_buckets_block_all_public_access_and_are_encrypted(aws_synth, bucket):
    props = buckets(aws_synth)[bucket]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == BLOCK_ALL
    [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")


@pytest.mark.parametrize("bucket_prefix", ["PageBucket", "PageLogBucket"])
def test_buckets_refuse_requests_without_tls(aws_synth, bucket_prefix):
    assert any(s["Effect"] == "Deny" and s["Action"] == "s3:*"
               and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
               for s in bucket_policy(aws_synth, bucket_prefix))


def test_page_bucket_is_versioned_and_access_logged(aws_synth):
    props = buckets(aws_synth)["page"]["Properties"]
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["LoggingConfiguration"]["DestinationBucketName"]["Ref"].startswith("PageLogBucket")


def test_only_this_distribution_reads_the_page_bucket(aws_synth):
    reads = [s for s in bucket_policy(aws_synth, "PageBucket") if s["Effect"] == "Allow"
             and s["Principal"] == {"Service": "cloudfront.amazonaws.com"}]
    assert [s["Action"] for s in reads] == ["s3:GetObject"]
    assert "PageDistribution" in json.dumps(reads[0]["Condition"]["StringEquals"]["AWS:SourceArn"])


def test_log_bucket_allows_acls_for_cloudfront_standard_logs(aws_synth):
    props = buckets(aws_synth)["logs"]["Properties"]
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerPreferred"}]
    assert props["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 30


def test_prod_buckets_are_retained_and_dev_ones_emptied_and_destroyed(aws_synth, aws_prod_synth):
    for bucket in buckets(aws_prod_synth).values():
        assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert not aws_prod_synth.templates["web"].find_resources("Custom::S3AutoDeleteObjects")
    for bucket in buckets(aws_synth).values():
        assert bucket["DeletionPolicy"] == "Delete"
    assert len(aws_synth.templates["web"].find_resources("Custom::S3AutoDeleteObjects")) == 2


# --- the distribution ------------------------------------------------------------------------------

def distribution(synth) -> dict:
    return only(synth.templates["web"], "AWS::CloudFront::Distribution")["Properties"]["DistributionConfig"]


def test_distribution_reads_the_bucket_through_origin_access_control(aws_synth):
    [origin] = distribution(aws_synth)["Origins"]
    assert "PageBucket" in json.dumps(origin["DomainName"])
    assert "OriginAccessControl" in json.dumps(origin["OriginAccessControlId"])
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}  # no legacy OAI
    oac = only(aws_synth.templates["web"], "AWS::CloudFront::OriginAccessControl")["Properties"]
    config = oac["OriginAccessControlConfig"]
    assert (config["OriginAccessControlOriginType"], config["SigningBehavior"], config["SigningProtocol"]) == (
        "s3", "always", "sigv4")


def test_distribution_serves_https_only_and_the_page_at_its_root(aws_synth):
    config = distribution(aws_synth)
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    assert config["DefaultCacheBehavior"]["AllowedMethods"] == ["GET", "HEAD"]
    assert config["DefaultRootObject"] == "index.html"


def test_distribution_writes_access_logs_to_the_log_bucket(aws_synth):
    logging = distribution(aws_synth)["Logging"]
    assert "PageLogBucket" in json.dumps(logging["Bucket"])


def security_headers(synth) -> dict:
    policy = only(synth.templates["web"], "AWS::CloudFront::ResponseHeadersPolicy")
    return policy["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]


def test_every_response_carries_the_headers_policy(aws_synth):
    behavior = distribution(aws_synth)["DefaultCacheBehavior"]
    assert "PageHeaders" in json.dumps(behavior["ResponseHeadersPolicyId"])


def csp(synth) -> str:
    """The CSP with its tokens written out: the WebSocket API's id as <api>."""
    value = security_headers(synth)["ContentSecurityPolicy"]
    assert value["Override"] is True
    parts = value["ContentSecurityPolicy"]["Fn::Join"][1]
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif "Fn::ImportValue" in part:
            assert "WebSocketApi" in part["Fn::ImportValue"], part
            out.append("<api>")
        else:
            assert part == {"Ref": "AWS::URLSuffix"}, part
            out.append("amazonaws.com")
    return "".join(out)


def test_csp_lets_the_page_connect_only_to_its_own_websocket_url_and_cognito(aws_synth):
    directives = dict(d.split(" ", 1) for d in csp(aws_synth).split("; "))
    assert directives["connect-src"].split() == [
        "'self'", "wss://<api>.execute-api.us-east-1.amazonaws.com/dev", "https://cognito-idp.us-east-1.amazonaws.com"]
    assert directives["default-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"


def test_prod_csp_names_the_prod_stage(aws_prod_synth):
    assert "wss://<api>.execute-api.us-east-1.amazonaws.com/prod " in csp(aws_prod_synth)


def test_headers_policy_sets_hsts_no_framing_nosniff_and_no_referrer(aws_synth):
    headers = security_headers(aws_synth)
    assert headers["StrictTransportSecurity"] == {
        "AccessControlMaxAgeSec": 365 * 86400, "IncludeSubdomains": True, "Override": True}
    assert headers["FrameOptions"] == {"FrameOption": "DENY", "Override": True}
    assert headers["ContentTypeOptions"] == {"Override": True}
    assert headers["ReferrerPolicy"] == {"ReferrerPolicy": "no-referrer", "Override": True}


# --- the page's files and config.json --------------------------------------------------------------

def deployment(synth) -> dict:
    return only(synth.templates["web"], "Custom::CDKBucketDeployment")["Properties"]


def test_page_and_config_are_deployed_to_the_bucket_and_invalidate_the_distribution(aws_synth):
    props = deployment(aws_synth)
    assert props["DestinationBucketName"]["Ref"].startswith("PageBucket")
    assert len(props["SourceObjectKeys"]) == 2  # web/ and config.json
    assert props["DistributionId"]["Ref"].startswith("PageDistribution")
    assert props["DistributionPaths"] == ["/*"]
    assert props["Prune"] is True


def staged_directory_assets(synth) -> list:
    """The directories the web stack's assets were staged to (zipped at publish)."""
    manifest = json.loads((synth.out_dir / f"cloudia-aws-{synth.stage}-web.assets.json").read_text())
    paths = [synth.out_dir / f["source"]["path"] for f in manifest["files"].values()]
    return [path for path in paths if path.is_dir()]


def test_the_web_folder_is_the_pages_asset(aws_synth):
    from stacks.components.hosted_page import WEB_DIR

    [page] = [d for d in staged_directory_assets(aws_synth) if (d / "index.html").exists()]
    assert sorted(p.name for p in page.iterdir()) == sorted(p.name for p in WEB_DIR.iterdir())
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in page.iterdir()}
    assert page.name.removeprefix("asset.") + ".zip" in deployment(aws_synth)["SourceObjectKeys"]


def _described(value: dict) -> str:
    """A deploy-time value of config.json (a joined token) as text, an import written `<import:NAME>`."""
    out = []
    for part in value["Fn::Join"][1]:
        if isinstance(part, str):
            out.append(part)
        elif "Fn::ImportValue" in part:
            out.append(f"<import:{part['Fn::ImportValue'].split(':', 1)[1]}>")
        else:
            assert part == {"Ref": "AWS::URLSuffix"}, part
            out.append("amazonaws.com")
    return "".join(out)


def config_json(synth) -> dict:
    """config.json as the deployment writes it: its markers replaced by their deploy-time values."""
    [folder] = [d for d in staged_directory_assets(synth) if (d / "config.json").exists()]
    text = (folder / "config.json").read_text()
    markers = next(m for m in deployment(synth)["SourceMarkers"] if m)
    for marker, value in markers.items():
        text = text.replace(marker, _described(value))  # each value carries its own JSON quotes
    return json.loads(text)


def test_config_json_names_the_stages_websocket_url_region_pool_and_client(aws_synth):
    config = config_json(aws_synth)
    assert set(config) == {"websocketUrl", "region", "userPoolId", "userPoolClientId", "cognitoEndpoint"}
    assert config["websocketUrl"].startswith("wss://<import:ExportsOutputRefWebSocketApi")
    assert config["websocketUrl"].endswith(".execute-api.us-east-1.amazonaws.com/dev")
    assert config["region"] == "us-east-1"
    assert config["userPoolId"].startswith("<import:ExportsOutputRefIdentityUserPool96FE3B9B")
    assert config["userPoolClientId"].startswith("<import:ExportsOutputRefIdentityUserPoolWebClient274C53C4")
    assert config["cognitoEndpoint"] == "https://cognito-idp.us-east-1.amazonaws.com/"


# --- outputs ---------------------------------------------------------------------------------------

def test_web_stack_outputs_the_page_url(aws_synth):
    outputs = aws_synth.templates["web"].to_json()["Outputs"]
    [distribution_id] = aws_synth.templates["web"].find_resources("AWS::CloudFront::Distribution")
    assert outputs["PageUrl"]["Value"] == {
        "Fn::Join": ["", ["https://", {"Fn::GetAtt": [distribution_id, "DomainName"]}]]}


def test_state_stack_outputs_the_pool_and_its_client(aws_synth):
    outputs = aws_synth.templates["state"].to_json()["Outputs"]
    assert outputs["UserPoolId"]["Value"] == {"Ref": "IdentityUserPool96FE3B9B"}
    assert outputs["UserPoolClientId"]["Value"] == {"Ref": "IdentityUserPoolWebClient274C53C4"}


def test_api_stack_still_outputs_the_websocket_url(aws_synth):
    assert "WebSocketUrl" in aws_synth.templates["api"].to_json()["Outputs"]


def test_the_local_target_has_no_web_stack(local_synth):
    assert "web" not in local_synth.templates
