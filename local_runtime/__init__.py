"""Local runtime of cloud-ia: the processes that stand in for AWS-only services on this machine."""
