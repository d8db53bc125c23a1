"""Sign-in: the Amazon Cognito user pool whose tokens open a connection, and the page's app client.

The `aws` target only: moto's CloudFormation creates no Cognito resources, so `make up` creates the
local pool through the cognito-idp API. The pool holds the users, so it is stateful (see
`StateStack`); the functions verify its tokens (`cloudia/auth.py`), the page signs in against it.
"""
from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cognito as cognito
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from cloudia.auth import PASSWORD_POLICY, user_pool_name
from stacks.config import AppConfig

# An invited user's temporary password expires after this many days unused.
TEMPORARY_PASSWORD_DAYS = 7


class ChatIdentity(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig,
                 removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, construct_id)
        self.user_pool = cognito.UserPool(
            self, "UserPool",
            user_pool_name=user_pool_name(config.target, config.stage),
            # Off by default: an operator invites each user (`python -m cloudia.users invite`).
            self_sign_up_enabled=config.user_pool_self_sign_up,
            # People sign in with a username; the email is where invitations and recovery codes go.
            sign_in_aliases=cognito.SignInAliases(username=True),
            standard_attributes=cognito.StandardAttributes(
                email=cognito.StandardAttribute(required=True, mutable=True)),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            password_policy=cognito.PasswordPolicy(
                min_length=PASSWORD_POLICY["MinimumLength"],
                require_lowercase=PASSWORD_POLICY["RequireLowercase"],
                require_uppercase=PASSWORD_POLICY["RequireUppercase"],
                require_digits=PASSWORD_POLICY["RequireNumbers"], require_symbols=PASSWORD_POLICY["RequireSymbols"],
                temp_password_validity=Duration.days(TEMPORARY_PASSWORD_DAYS)),
            # prod: each user may add an authenticator app (TOTP); SMS is never used (cost, SIM swap).
            mfa=cognito.Mfa.OPTIONAL if config.is_prod else cognito.Mfa.OFF,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False) if config.is_prod else None,
            # Lite: password sign-in, TOTP and token revocation are all this system uses; the cheapest tier.
            feature_plan=cognito.FeaturePlan.LITE,
            deletion_protection=config.is_prod,
            removal_policy=removal_policy,
        )
        NagSuppressions.add_resource_suppressions(self.user_pool, [
            NagPackSuppression(id="AwsSolutions-COG2", reason=(
                "MFA is optional (TOTP) in prod and off in dev: users are invited by an operator, and "
                "requiring a second factor is a per-deployment decision left to the operator.")),
            NagPackSuppression(id="AwsSolutions-COG8", reason=(
                "Threat protection needs the Plus feature plan, billed per monthly active user; sign-up "
                "is closed by default (users are invited) and the password policy is strict.")),
        ])

        # A public client (no secret): the page runs in a browser and cannot keep one.
        self.client = self.user_pool.add_client(
            "WebClient",
            generate_secret=False,
            # USER_PASSWORD_AUTH: the page calls InitiateAuth over HTTPS (the same flow against the
            # emulator); REFRESH_TOKEN_AUTH comes with it, for the page's refresh before expiry.
            auth_flows=cognito.AuthFlow(user_password=True),
            # No hosted UI or OAuth redirects: the page signs in through the API itself.
            disable_o_auth=True,
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO],
            # A wrong username answers like a wrong password: no probing for who has an account.
            prevent_user_existence_errors=True,
            # Sign-out revokes the refresh token, so a leaked one stops working.
            enable_token_revocation=True,
            id_token_validity=Duration.minutes(config.user_pool_access_token_minutes),
            access_token_validity=Duration.minutes(config.user_pool_access_token_minutes),
            refresh_token_validity=Duration.days(config.user_pool_refresh_token_days),
        )

    @property
    def endpoint(self) -> str:
        """Where the page calls cognito-idp (InitiateAuth, RespondToAuthChallenge, RevokeToken)."""
        return f"https://cognito-idp.{Stack.of(self).region}.amazonaws.com"
