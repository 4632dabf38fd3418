"""The one exception type the sampler raises for problems a user can fix."""


class SamplingError(RuntimeError):
    """Bad input or an unusable output directory; the message says what is wrong and what to do."""
