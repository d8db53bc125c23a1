"""Constructs: each models one architectural task (queue + DLQ, tables, functions, WebSocket API, worker
service, Redis, monitoring); the stacks only wire them together."""
