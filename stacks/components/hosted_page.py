"""The chat page on AWS: `web/` and its `config.json` in a private S3 bucket, served by CloudFront.

Only CloudFront reads the bucket (Origin Access Control); viewers get HTTPS only, and every response
carries a headers policy whose CSP lets the page talk to exactly its WebSocket API and Cognito.
"""
from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3_deployment
from cdk_nag import NagPackSuppression, NagSuppressions, RegexAppliesTo
from constructs import Construct

from stacks.components.identity import ChatIdentity
from stacks.components.log_groups import retained_log_group
from stacks.config import AppConfig

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
INDEX = "index.html"
# Earlier versions of the page stay this long, to restore a bad deploy by hand.
NONCURRENT_VERSION_DAYS = 30
HSTS_MAX_AGE = Duration.days(365)
# How long an edge keeps a file: a deployment invalidates them all, so only a deploy changes them.
EDGE_CACHE = Duration.days(365)
# The CDK's BucketDeployment grants these wildcards on the asset and the page bucket.
DEPLOYMENT_S3_ACTIONS = ("GetBucket*", "GetObject*", "List*", "Abort*", "DeleteObject*")


def content_security_policy(websocket_url: str, cognito_endpoint: str) -> str:
    """Scripts, styles and images from the page's own origin only; connections to its own origin
    (`config.json`), the stage's WebSocket URL and Cognito, and nowhere else; never framed."""
    return "; ".join([
        "default-src 'self'",
        f"connect-src 'self' {websocket_url} {cognito_endpoint}",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


class HostedPage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, websocket_url: str,
                 identity: ChatIdentity, key: kms.IKey | None = None) -> None:
        super().__init__(scope, construct_id)
        removal = RemovalPolicy.RETAIN if config.is_prod else RemovalPolicy.DESTROY

        # CloudFront's standard logs are delivered through an ACL grant, so this bucket allows ACLs
        # (bucket owner preferred: the objects still belong to the account); S3's server access logs
        # of the page bucket come in through the bucket policy (cdk.json's serverAccessLogsUseBucketPolicy).
        self.log_bucket = s3.Bucket(
            self, "LogBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            # SSE-S3: neither log delivery writes to a bucket whose default encryption is a KMS key.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(config.log_retention_days))],
            removal_policy=removal,
            auto_delete_objects=removal == RemovalPolicy.DESTROY,
        )
        self.bucket = s3.Bucket(
            self, "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            lifecycle_rules=[s3.LifecycleRule(
                noncurrent_version_expiration=Duration.days(NONCURRENT_VERSION_DAYS))],
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix="page-bucket/",
            removal_policy=removal,
            auto_delete_objects=removal == RemovalPolicy.DESTROY,
        )

        headers = cloudfront.ResponseHeadersPolicy(
            self, "Headers",
            comment="cloud-ia chat page: CSP, HSTS, no framing",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=content_security_policy(websocket_url, identity.endpoint),
                    override=True),
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=HSTS_MAX_AGE, include_subdomains=True, override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=True),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.NO_REFERRER, override=True),
            ),
        )
        self.distribution = cloudfront.Distribution(
            self, "Distribution",
            comment="cloud-ia chat page",
            default_root_object=INDEX,
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                response_headers_policy=headers,
                compress=True,
            ),
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            # North America and Europe edges only: the cheapest class, enough for a chat page.
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            enable_logging=True,
            log_bucket=self.log_bucket,
            log_file_prefix="cloudfront/",
        )
        NagSuppressions.add_resource_suppressions(self.distribution, [
            NagPackSuppression(id="AwsSolutions-CFR1", reason=(
                "No geo restriction: the page is for invited users wherever they are; sign-in, not "
                "geography, decides who chats.")),
            NagPackSuppression(id="AwsSolutions-CFR2", reason=(
                "No WAF web ACL (about 5 USD a month plus requests): the page is static files, the "
                "WebSocket API is throttled per stage and Cognito rate-limits sign-in itself.")),
            NagPackSuppression(id="AwsSolutions-CFR4", reason=(
                "The distribution uses CloudFront's default *.cloudfront.net certificate, whose TLS "
                "policy cannot be chosen; a custom domain with an ACM certificate would set TLSv1.2_2021.")),
        ])

        # The page's endpoints, beside its files: the same `config.json` shape `make up` serves locally.
        page_config = {
            "websocketUrl": websocket_url,
            "region": Stack.of(self).region,
            "userPoolId": identity.user_pool.user_pool_id,
            "userPoolClientId": identity.client.user_pool_client_id,
            "cognitoEndpoint": f"{identity.endpoint}/",
        }
        deployment = s3_deployment.BucketDeployment(
            self, "Deployment",
            destination_bucket=self.bucket,
            sources=[s3_deployment.Source.asset(str(WEB_DIR)),
                     s3_deployment.Source.json_data("config.json", page_config)],
            # Browsers revalidate on every load (a cheap 304 from the edge), so a deploy is seen at
            # once; the edges keep the files until the next deployment's invalidation.
            cache_control=[s3_deployment.CacheControl.max_age(Duration.seconds(0)),
                           s3_deployment.CacheControl.s_max_age(EDGE_CACHE)],
            distribution=self.distribution,
            distribution_paths=["/*"],
            log_group=retained_log_group(self, "DeploymentLogs", config, key),
        )
        # The deployment function and its role are the CDK's own singleton, at the stack's root.
        NagSuppressions.add_resource_suppressions(deployment.handler_role, [
            NagPackSuppression(id="AwsSolutions-IAM4", applies_to=[
                "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
                reason="The CDK's BucketDeployment function writes its own logs with AWS's standard policy."),
            NagPackSuppression(id="AwsSolutions-IAM5", applies_to=[
                *(f"Action::s3:{action}" for action in DEPLOYMENT_S3_ACTIONS),
                RegexAppliesTo(regex="/^Resource::arn:[^:]+:s3:::cdk-[a-z0-9]+-assets-.+/\\*$/"),
                RegexAppliesTo(regex="/^Resource::<PageBucket[0-9A-F]{8}\\.Arn>/\\*$/"),
                "Resource::*"],
                reason=("The CDK's BucketDeployment function reads the page's asset from the CDK asset "
                        "bucket and syncs it into the page bucket (object wildcards on both); "
                        "cloudfront:CreateInvalidation and GetInvalidation take no resource ARN.")),
        ], apply_to_children=True)
        for child in Stack.of(self).node.children:
            if child.node.id.startswith("Custom::CDKBucketDeployment"):
                NagSuppressions.add_resource_suppressions(child, [NagPackSuppression(
                    id="AwsSolutions-L1", reason=(
                        "The CDK's BucketDeployment function: its Python runtime is chosen by the CDK "
                        "and moves with aws-cdk-lib upgrades."))])

    @property
    def url(self) -> str:
        return f"https://{self.distribution.distribution_domain_name}"
