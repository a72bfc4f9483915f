"""How long a recording is, read from the audio itself.

A boundary module over the recording files, with the decisions as pure functions over
bytes (tested with hand-built headers and frames):

- RIFF/WAVE, any codec (PCM, mu-law, a-law, GSM/WAV49 with tag 0x31 at 1625 B/s...):
  data chunk bytes / the fmt chunk's byte rate.
- Raw GSM (`.gsm`): 33 bytes per 20 ms frame.
- MP3: the Xing/Info (or VBRI) frame count when the first frame carries one, else every
  MPEG 1/2/2.5 layer III frame is walked (ID3v2 skipped, garbage resynchronised).

A file whose header is wrong, truncated, or still being written (RIFF or data size 0 or
0xFFFFFFFF, a data chunk that runs past the end of the file) gets an estimate from its
size instead of an error: the bytes after the header / the header's byte rate when the
fmt chunk is readable, else 8000 Hz 16-bit mono (16000 B/s after a 44-byte header) for
WAV and 128 kbit/s (16000 B/s) for MP3. Durations are whole seconds, rounded half up.

    duration_seconds("/var/spool/asterisk/monitor/2024/07/03/out-...wav")   # -> 25
"""

import os
import struct

# Estimates for a file whose header cannot be trusted.
WAV_HEADER_BYTES = 44
WAV_FALLBACK_RATE = 16000        # 8000 Hz, 16-bit, mono: what Asterisk records by default
WAV49_HEADER_BYTES = 60
WAV49_RATE = 1625                # GSM in WAV: 65 bytes per 40 ms
MP3_FALLBACK_RATE = 16000        # 128 kbit/s
GSM_FRAME_BYTES = 33             # one 20 ms frame of raw GSM 06.10

_UNKNOWN_SIZE = (0, 0xFFFFFFFF)


def rounded(numerator, denominator):
    """numerator / denominator in whole seconds, rounded half up; 0 when undefined.

    >>> rounded(5, 2), rounded(7, 3), rounded(0, 8000)
    (3, 2, 0)
    """
    if denominator <= 0 or numerator <= 0:
        return 0
    return (2 * numerator + denominator) // (2 * denominator)


def duration_seconds(path, size=None):
    """Whole seconds of the recording at `path`, chosen by its extension (any case).

    Never raises for a bad file: a broken header is estimated from the size. A file that
    cannot be opened at all (gone, unreadable) is 0. `size` saves a stat when known.
    """
    extension = path.rpartition(".")[2].lower()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0
    try:
        if size is None:
            size = os.fstat(fd).st_size
        if extension == "gsm":
            return gsm_duration(size)
        if extension == "mp3":
            return _mp3_file_duration(fd, size)
        rate_hint = WAV49_RATE if extension == "wav49" else None
        return wav_duration(_reader(fd), size, rate_hint)
    except OSError:
        return 0
    finally:
        os.close(fd)


def _reader(fd):
    def read_at(offset, count):
        return os.pread(fd, count, offset)
    return read_at


def bytes_reader(data):
    """A read_at(offset, count) over a bytes object, for the pure functions below."""
    def read_at(offset, count):
        return data[offset:offset + count]
    return read_at


# --- raw GSM ---

def gsm_duration(size):
    """Raw GSM 06.10: 33 bytes per 20 ms frame; a trailing partial frame is not sound."""
    return rounded(size // GSM_FRAME_BYTES, 50)


# --- RIFF/WAVE ---

def wav_duration(read_at, size, rate_hint=None):
    """Seconds of a RIFF/WAVE file of `size` bytes, read through read_at(offset, count).

    data chunk bytes / byte rate. When the sizes in the header cannot be trusted (0 or
    0xFFFFFFFF while Asterisk is still writing, or past the end of the file) the data runs
    to the end of the file; without a usable fmt chunk the whole file is estimated.
    """
    head = read_at(0, 12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return _wav_estimate(size, rate_hint)
    byte_rate = None
    offset = 12
    # Chunks until "data"; a real header has a handful, so bound the walk.
    for _ in range(64):
        chunk = read_at(offset, 8)
        if len(chunk) < 8:
            break
        chunk_id = chunk[:4]
        chunk_size = struct.unpack("<I", chunk[4:])[0]
        body = offset + 8
        if chunk_id == b"fmt ":
            byte_rate = _fmt_byte_rate(read_at(body, min(chunk_size, 40)))
        elif chunk_id == b"data":
            if byte_rate is None:
                return _wav_estimate(size, rate_hint)
            available = max(0, size - body)
            if chunk_size in _UNKNOWN_SIZE or chunk_size > available:
                # Still being written (or cut short): the data is what is there.
                chunk_size = available
            return rounded(chunk_size, byte_rate)
        if chunk_size == 0xFFFFFFFF:
            break
        offset = body + chunk_size + (chunk_size & 1)
    if byte_rate is not None:
        # A fmt chunk but no data chunk header in reach: what follows the header.
        return rounded(max(0, size - WAV_HEADER_BYTES), byte_rate)
    return _wav_estimate(size, rate_hint)


def _fmt_byte_rate(fmt):
    """Bytes per second from a fmt chunk body, or None when it is unusable."""
    if len(fmt) < 16:
        return None
    _tag, channels, sample_rate, byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if byte_rate:
        return byte_rate
    if channels and sample_rate and bits:
        computed = sample_rate * channels * bits // 8
        return computed or None
    if sample_rate and block_align:
        return sample_rate * block_align
    return None


def _wav_estimate(size, rate_hint=None):
    if rate_hint == WAV49_RATE:
        return rounded(max(0, size - WAV49_HEADER_BYTES), WAV49_RATE)
    return rounded(max(0, size - WAV_HEADER_BYTES), WAV_FALLBACK_RATE)


# --- MP3 ---

# bitrates in kbit/s by index, for layer III: MPEG1, and MPEG2 / MPEG2.5
_BITRATES_V1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0)
_BITRATES_V2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0)
# sample rates by version bits (0: MPEG2.5, 2: MPEG2, 3: MPEG1) and index
_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
# LCM of every sample rate above: durations are summed exactly in these units.
_RATE_LCM = 14112000


def mp3_frame(header):
    """(frame length in bytes, samples per frame, sample rate, MPEG1?) for a 32-bit
    layer III frame header, or None when it is no valid one.

    >>> mp3_frame(0xFFFB9064)   # MPEG1 layer III, 128 kbit/s, 44100 Hz, no padding
    (417, 1152, 44100, True)
    """
    if header >> 21 != 0x7FF:
        return None
    version = (header >> 19) & 3
    layer = (header >> 17) & 3
    bitrate_index = (header >> 12) & 15
    rate_index = (header >> 10) & 3
    if version == 1 or layer != 1 or rate_index == 3:
        return None
    mpeg1 = version == 3
    bitrate = (_BITRATES_V1 if mpeg1 else _BITRATES_V2)[bitrate_index] * 1000
    if not bitrate:            # free format or a bad index
        return None
    sample_rate = _SAMPLE_RATES[version][rate_index]
    padding = (header >> 9) & 1
    if mpeg1:
        return 144 * bitrate // sample_rate + padding, 1152, sample_rate, True
    return 72 * bitrate // sample_rate + padding, 576, sample_rate, False


def id3v2_size(data):
    """Bytes taken by an ID3v2 tag at the start of `data` (0 when there is none)."""
    if len(data) < 10 or data[:3] != b"ID3":
        return 0
    size_bytes = data[6:10]
    if any(b & 0x80 for b in size_bytes):
        return 0
    size = (size_bytes[0] << 21) | (size_bytes[1] << 14) | (size_bytes[2] << 7) | size_bytes[3]
    footer = 10 if data[5] & 0x10 else 0
    return 10 + size + footer


def _xing_frames(data, position, frame):
    """The frame count of a Xing/Info or VBRI header in the frame at `position`, or None."""
    length, _samples, _rate, mpeg1 = frame
    channel_mode = (data[position + 3] >> 6) & 3
    mono = channel_mode == 3
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    tag = position + 4 + side_info
    if data[tag:tag + 4] in (b"Xing", b"Info"):
        flags = struct.unpack(">I", data[tag + 4:tag + 8])[0] if len(data) >= tag + 8 else 0
        if flags & 1 and len(data) >= tag + 12:
            return struct.unpack(">I", data[tag + 8:tag + 12])[0]
        return None
    vbri = position + 4 + 32
    if data[vbri:vbri + 4] == b"VBRI" and len(data) >= vbri + 18:
        return struct.unpack(">I", data[vbri + 14:vbri + 18])[0]
    return None


def mp3_duration(data):
    """Seconds of MP3 audio in `data` (bytes or mmap): the Xing/Info/VBRI frame count of
    the first frame where there is one, else the sum of every complete frame. Data with
    no frame at all is estimated at 128 kbit/s."""
    size = len(data)
    position = id3v2_size(data[:10])
    frames_by_rate = {}
    first = True
    in_sync = False
    known = {}
    unpack = struct.Struct(">I").unpack_from

    def frame_at(offset):
        header = unpack(data, offset)[0]
        frame = known.get(header)
        if frame is None:
            frame = mp3_frame(header)
            if frame is not None:
                known[header] = frame
        return frame

    while position + 4 <= size:
        frame = frame_at(position)
        if frame is not None and not in_sync:
            # After garbage, a sync word counts only if another frame (or the end of the
            # file) follows it: 0xFFE in random bytes is common, two in a row are not.
            following = position + frame[0]
            in_sync = following == size or (following + 4 <= size
                                             and frame_at(following) is not None)
        if frame is None or not in_sync:
            in_sync = False
            next_sync = data.find(b"\xff", position + 1)
            if next_sync < 0:
                break
            position = next_sync
            continue
        length, samples, sample_rate, _mpeg1 = frame
        if position + length > size:
            break                          # a frame cut short: still being written
        if first:
            first = False
            counted = _xing_frames(data, position, frame)
            if counted is not None:
                return rounded(counted * samples * (_RATE_LCM // sample_rate), _RATE_LCM)
        key = (samples, sample_rate)
        frames_by_rate[key] = frames_by_rate.get(key, 0) + 1
        position += length
    if not frames_by_rate:
        return rounded(size, MP3_FALLBACK_RATE)
    total = sum(count * samples * (_RATE_LCM // rate)
                for (samples, rate), count in frames_by_rate.items())
    return rounded(total, _RATE_LCM)


def _mp3_file_duration(fd, size):
    if size <= 0:
        return 0
    import mmap
    try:
        mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (ValueError, OSError):
        return rounded(size, MP3_FALLBACK_RATE)
    try:
        return mp3_duration(mapped)
    finally:
        mapped.close()
