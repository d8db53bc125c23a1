"""cloud-ia's shared runtime package: the job model, the protocol, Redis and DynamoDB access and the
resilience primitives, used by the Lambda functions and the worker alike (bundled into each Lambda
asset and copied into the worker image, never duplicated)."""
