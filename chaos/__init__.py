"""The chaos and load suite: real processes, real faults, and an account of every message.

    python -m chaos [--short|--long] [--scenario N]
"""
