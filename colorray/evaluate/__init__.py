"""The evaluation harness: ``python -m colorray.evaluate``; the protocol and tables live in ``harness``."""
