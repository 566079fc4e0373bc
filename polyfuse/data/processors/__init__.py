"""Processors: one per input kind, registered in ``PROCESSORS``; numpy only (no torch)."""

from polyfuse.data.processors.audio import AudioProcessor
from polyfuse.data.processors.base import FitContext, Processor, RowContext, is_missing
from polyfuse.data.processors.image import ImageProcessor
from polyfuse.data.processors.sequence import SequenceProcessor
from polyfuse.data.processors.tabular import TabularProcessor
from polyfuse.data.processors.text import TextProcessor
from polyfuse.data.processors.video import VideoProcessor

__all__ = [
    "AudioProcessor", "FitContext", "ImageProcessor", "Processor", "RowContext", "SequenceProcessor",
    "TabularProcessor", "TextProcessor", "VideoProcessor", "is_missing",
]
