"""cloud-ia's worker: takes LLM jobs from the SQS queue and answers them, resiliently."""
