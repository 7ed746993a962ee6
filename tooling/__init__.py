"""Operator tooling (smsctl, the dev stack, retention, time specs): imported by nothing else."""
