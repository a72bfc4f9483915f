"""What a recording holds, in pure Python (no numpy): is it a WAV that plays, is there
sound in it, and which tone is strongest (Goertzel's algorithm, one frequency at a time).

>>> import math
>>> samples = [int(8000 * math.sin(2 * math.pi * 525 * n / 8000)) for n in range(8000)]
>>> strongest(samples, 8000, range(300, 700, 5))
525
"""

import math
import wave


def read_wav(path):
    """(sample rate, signed 16-bit mono samples) of a PCM WAV; raises wave.Error or
    AssertionError for anything else."""
    with wave.open(str(path), "rb") as handle:
        assert handle.getnchannels() == 1, "not mono"
        assert handle.getsampwidth() == 2, "not 16-bit PCM"
        rate = handle.getframerate()
        data = handle.readframes(handle.getnframes())
    samples = [int.from_bytes(data[i:i + 2], "little", signed=True)
               for i in range(0, len(data) - 1, 2)]
    return rate, samples


def rms(samples):
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def power(samples, rate, frequency):
    """The power of one frequency in the samples (Goertzel)."""
    coefficient = 2 * math.cos(2 * math.pi * frequency / rate)
    previous = before = 0.0
    for sample in samples:
        previous, before = sample + coefficient * previous - before, previous
    return previous * previous + before * before - coefficient * previous * before


def strongest(samples, rate, frequencies):
    """The frequency of `frequencies` with the most power."""
    return max(frequencies, key=lambda f: power(samples, rate, f))
