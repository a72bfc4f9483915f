"""Durations read from the audio itself (callexchange.recordings.audio), on real files: PCM written
by the `wave` module, hand-built mu-law / a-law / GSM (WAV49) headers, raw GSM, and MP3
streams of valid frame headers with zeroed payloads."""

import struct
import wave

import pytest

from callexchange.recordings import audio
from callexchange.recordings.audio import duration_seconds, mp3_duration, mp3_frame, rounded


# --- builders -----------------------------------------------------------------------------

def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def pcm_wav(tmp_path, name, seconds, rate=8000, width=2, channels=1):
    path = tmp_path / name
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(b"\0" * int(rate * seconds) * width * channels)
    return str(path)


def riff(tag, rate, byte_rate, block_align, bits, data_length, channels=1, fmt_extra=b"",
         before_data=b"", riff_size=None, data_size=None):
    fmt = struct.pack("<HHIIHH", tag, channels, rate, byte_rate, block_align, bits) + fmt_extra
    chunks = (b"fmt " + struct.pack("<I", len(fmt)) + fmt + before_data + b"data"
              + struct.pack("<I", data_length if data_size is None else data_size)
              + b"\x55" * data_length)
    size = 4 + len(chunks) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", size) + b"WAVE" + chunks


def ulaw(seconds, **more):
    return riff(7, 8000, 8000, 1, 8, int(8000 * seconds), **more)


def alaw(seconds, **more):
    return riff(6, 8000, 8000, 1, 8, int(8000 * seconds), **more)


def wav49(seconds, **more):
    """GSM 06.10 in RIFF as Asterisk's wav49 writes it: tag 0x31, 1625 B/s, 65-byte
    blocks of 320 samples, a fact chunk."""
    fact = b"fact" + struct.pack("<II", 4, int(8000 * seconds))
    return riff(0x31, 8000, 1625, 65, 0, int(1625 * seconds), fmt_extra=struct.pack("<HH", 2, 320),
                before_data=fact, **more)


def mp3_header(version=3, bitrate_index=9, rate_index=0, padding=0, mono=False):
    """version bits: 3 MPEG1, 2 MPEG2, 0 MPEG2.5; layer III; no CRC."""
    return ((0x7FF << 21) | (version << 19) | (1 << 17) | (1 << 16) | (bitrate_index << 12)
            | (rate_index << 10) | (padding << 9) | ((3 if mono else 1) << 6))


def mp3_frames(count, version=3, bitrate_index=9, rate_index=0, paddings=None, mono=False):
    data = bytearray()
    for n in range(count):
        padding = paddings[n % len(paddings)] if paddings else 0
        header = mp3_header(version, bitrate_index, rate_index, padding, mono)
        length = mp3_frame(header)[0]
        data += struct.pack(">I", header) + b"\0" * (length - 4)
    return bytes(data)


def xing_frame(frames, version=3, bitrate_index=9, rate_index=0, mono=False, tag=b"Info"):
    header = mp3_header(version, bitrate_index, rate_index, 0, mono)
    length, _samples, _rate, mpeg1 = mp3_frame(header)
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    body = bytearray(length - 4)
    body[side_info:side_info + 12] = tag + struct.pack(">II", 0x1, frames)
    return struct.pack(">I", header) + bytes(body)


def id3v2(size):
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x04\x00\x00" + syncsafe + b"\0" * size


# --- rounding -----------------------------------------------------------------------------

def test_rounding_is_half_up_in_whole_seconds():
    assert rounded(3, 2) == 2          # 1.5 -> 2
    assert rounded(5, 2) == 3          # 2.5 -> 3 (not banker's 2)
    assert rounded(14999, 10000) == 1
    assert rounded(15000, 10000) == 2
    assert rounded(0, 16000) == 0
    assert rounded(100, 0) == 0


# --- RIFF/WAVE ----------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, expected", [(0, 0), (0.49, 0), (0.5, 1), (1.5, 2),
                                               (25, 25), (917.5, 918)])
def test_pcm_wav_written_by_the_wave_module(tmp_path, seconds, expected):
    assert duration_seconds(pcm_wav(tmp_path, "a.wav", seconds)) == expected


def test_pcm_wav_stereo_44100_uses_the_byte_rate(tmp_path):
    assert duration_seconds(pcm_wav(tmp_path, "s.wav", 3.0, rate=44100, channels=2)) == 3


def test_ulaw_alaw_and_wav49_headers(tmp_path):
    assert duration_seconds(write(tmp_path, "u.wav", ulaw(12))) == 12
    assert duration_seconds(write(tmp_path, "a.wav", alaw(7.5))) == 8
    assert duration_seconds(write(tmp_path, "g.WAV", wav49(10))) == 10
    assert duration_seconds(write(tmp_path, "g.wav49", wav49(61))) == 61


def test_chunks_before_data_and_odd_sizes_are_walked(tmp_path):
    odd = b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\0"      # odd size, padded
    junk = b"JUNK" + struct.pack("<I", 5000) + b"\0" * 5000      # past the first 4 KB
    data = ulaw(4, before_data=odd + junk)
    assert duration_seconds(write(tmp_path, "l.wav", data)) == 4


def test_still_being_written_sizes_are_estimated_from_the_file(tmp_path):
    # Asterisk writes 0 (or -1) sizes until the recording is closed.
    for riff_size, data_size in ((0, 0), (0xFFFFFFFF, 0xFFFFFFFF), (36, 0)):
        data = riff(1, 8000, 16000, 2, 16, 48000, riff_size=riff_size, data_size=data_size)
        assert duration_seconds(write(tmp_path, "w.wav", data)) == 3


def test_data_size_beyond_the_file_uses_what_is_there(tmp_path):
    data = ulaw(10, data_size=8000 * 3600)          # header says an hour, 10 s are there
    assert duration_seconds(write(tmp_path, "t.wav", data)) == 10
    truncated = ulaw(10)[:44 + 8000 * 4]            # cut after 4 s
    assert duration_seconds(write(tmp_path, "c.wav", truncated)) == 4


def test_wav49_still_being_written_uses_its_own_byte_rate(tmp_path):
    data = wav49(20, data_size=0)
    assert duration_seconds(write(tmp_path, "g.WAV", data)) == 20


def test_broken_headers_get_the_default_estimate(tmp_path):
    # Not RIFF at all: 8000 Hz 16-bit mono after a 44-byte header.
    assert duration_seconds(write(tmp_path, "x.wav", b"\x01" * (44 + 16000 * 5))) == 5
    # A header cut short.
    assert duration_seconds(write(tmp_path, "h.wav", ulaw(1)[:20])) == 0
    # RIFF without a fmt chunk before data.
    no_fmt = b"RIFF" + struct.pack("<I", 0) + b"WAVE" + b"data" + struct.pack("<I", 32000) \
        + b"\0" * 32000
    assert duration_seconds(write(tmp_path, "n.wav", no_fmt)) == 2
    # A fmt chunk without any rate: the default.
    zero = riff(1, 0, 0, 0, 0, 16000 * 3)
    assert duration_seconds(write(tmp_path, "z.wav", zero)) == 3


def test_byte_rate_zero_is_computed_from_rate_channels_and_bits(tmp_path):
    data = riff(1, 8000, 0, 2, 16, 16000 * 6)
    assert duration_seconds(write(tmp_path, "r.wav", data)) == 6


def test_empty_and_missing_files_are_zero(tmp_path):
    for name in ("e.wav", "e.WAV", "e.gsm", "e.mp3", "e.wav49"):
        assert duration_seconds(write(tmp_path, name, b"")) == 0
    assert duration_seconds(str(tmp_path / "gone.wav")) == 0


def test_pure_wav_function_over_bytes():
    data = alaw(9)
    assert audio.wav_duration(audio.bytes_reader(data), len(data)) == 9


# --- raw GSM ------------------------------------------------------------------------------

def test_raw_gsm_is_33_bytes_per_20_ms(tmp_path):
    assert duration_seconds(write(tmp_path, "r.gsm", b"\xd0" * 33 * 50 * 14)) == 14
    assert duration_seconds(write(tmp_path, "h.GSM", b"\xd0" * 33 * 25)) == 1      # 0.5 s
    assert duration_seconds(write(tmp_path, "p.gsm", b"\xd0" * (33 * 24 + 32))) == 0  # 0.48 s


# --- MP3 ----------------------------------------------------------------------------------

def test_frame_header_table():
    assert mp3_frame(mp3_header()) == (417, 1152, 44100, True)
    assert mp3_frame(mp3_header(padding=1))[0] == 418
    assert mp3_frame(mp3_header(version=2, bitrate_index=8, rate_index=0)) == (208, 576, 22050, False)
    assert mp3_frame(mp3_header(version=0, bitrate_index=1, rate_index=2)) == (72, 576, 8000, False)
    assert mp3_frame(mp3_header(version=1)) is None           # reserved version
    assert mp3_frame(mp3_header(bitrate_index=0)) is None     # free format
    assert mp3_frame(mp3_header(bitrate_index=15)) is None
    assert mp3_frame(mp3_header(rate_index=3)) is None
    assert mp3_frame(0x12345678) is None


def test_mpeg1_frames_are_walked(tmp_path):
    # 383 frames of 1152 samples at 44100 Hz = 10.005 s; the padding pattern of 128k CBR.
    data = mp3_frames(383, paddings=[0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    assert duration_seconds(write(tmp_path, "a.mp3", data)) == 10


def test_mpeg2_and_mpeg25_frames_are_walked(tmp_path):
    mpeg2 = mp3_frames(1148, version=2, bitrate_index=8, rate_index=0)    # 29.99 s at 22050
    assert duration_seconds(write(tmp_path, "b.mp3", mpeg2)) == 30
    mpeg25 = mp3_frames(139, version=0, bitrate_index=1, rate_index=2, mono=True)  # 10.008 s
    assert duration_seconds(write(tmp_path, "c.MP3", mpeg25)) == 10


def test_id3v2_tag_is_skipped_and_id3v1_ignored(tmp_path):
    data = id3v2(3000) + mp3_frames(383) + b"TAG" + b"\0" * 125
    assert duration_seconds(write(tmp_path, "t.mp3", data)) == 10


def test_xing_and_info_frame_counts_are_used(tmp_path):
    # The Info frame says 3830 frames (100 s) although only 10 follow: the count wins.
    data = xing_frame(3830) + mp3_frames(10)
    assert duration_seconds(write(tmp_path, "x.mp3", data)) == 100
    vbr = xing_frame(2297, version=2, bitrate_index=8, mono=True, tag=b"Xing") \
        + mp3_frames(5, version=2, bitrate_index=8)                         # 60.003 s
    assert duration_seconds(write(tmp_path, "v.mp3", vbr)) == 60


def test_vbri_header_is_used(tmp_path):
    header = mp3_header()
    body = bytearray(mp3_frame(header)[0] - 4)
    body[32:50] = b"VBRI" + struct.pack(">HHHII", 1, 0, 75, 0, 766)      # 766 frames: 20.01 s
    data = struct.pack(">I", header) + bytes(body) + mp3_frames(3)
    assert duration_seconds(write(tmp_path, "vbri.mp3", data)) == 20


def test_garbage_between_frames_is_resynchronised(tmp_path):
    noise = b"\xff\xfb\x00garbage\xff" * 20
    data = mp3_frames(200) + noise + mp3_frames(183)
    assert duration_seconds(write(tmp_path, "g.mp3", data)) == 10


def test_a_frame_cut_short_is_not_counted(tmp_path):
    data = mp3_frames(384)[:-100]        # still being written
    assert mp3_duration(data) == 10


def test_mp3_without_frames_is_estimated_at_128_kbits(tmp_path):
    assert duration_seconds(write(tmp_path, "n.mp3", b"\x00" * 16000 * 7)) == 7
