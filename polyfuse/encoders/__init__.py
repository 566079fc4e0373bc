"""Encoders, one module per modality; importing this package registers them in ``ENCODERS``."""

from polyfuse.encoders import image, text, audio, timeseries, tabular, video  # noqa
from polyfuse.encoders import pretrained  # noqa: E402,F401
from polyfuse.encoders import features, ngrams  # noqa: E402,F401
