"""Filters for warnings that NNI 3.0 emits on newer torch releases and that are known harmless.

Only the exact messages are filtered, so every other warning still reaches the user.
"""
import warnings

# NNI 3.0 walks torch.nn and records every class; on torch >= 2.5 two names it does not know
# (``Buffer``, ``LinearCrossEntropyOptions``) make it warn once at import time.
_KNOWN_MESSAGES = (
    r"<class 'torch\.nn\.parameter\.Buffer'> is found to be not a nn\.Module",
    r"<class 'torch\.nn\.modules\.linear_cross_entropy_options\.LinearCrossEntropyOptions'> is found to be not a nn\.Module",
)


def silence_known_nni_warnings() -> None:
    """Ignore NNI's import-time RuntimeWarnings about torch classes it does not know."""
    for message in _KNOWN_MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=RuntimeWarning)
