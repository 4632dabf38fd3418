"""The golden checker: this implementation against the authors' code's outputs (shared/golden/).

It spans the model, guidance and inverse problems, so it sits above all of them.
"""
