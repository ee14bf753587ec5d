"""Generated demo media: short playable WAV tunes and PNG cover art, made locally and
deterministically from a seed (nothing is downloaded)."""

from __future__ import annotations

import io
import math
import random
import struct
import wave

from PIL import Image, ImageDraw

SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10], "pentatonic": [0, 2, 4, 7, 9],
          "dorian": [0, 2, 3, 5, 7, 9, 10]}


def tune_wav(seed: int, seconds: float = 8.0, rate: int = 16000) -> bytes:
    """A WAV file (mono, 16-bit PCM, ``rate`` Hz) of a little melody over a bass line, from ``seed``."""
    rng = random.Random(seed)
    scale = SCALES[rng.choice(sorted(SCALES))]
    root = rng.choice([48, 50, 52, 53, 55, 57])  # MIDI note of the key
    bpm = rng.choice([84, 96, 108, 120, 132])
    beat = 60.0 / bpm
    n = int(seconds * rate)
    samples = [0.0] * n

    def note(midi: int, start: float, length: float, amp: float, harmonics: tuple[float, ...]) -> None:
        freq = 440.0 * 2 ** ((midi - 69) / 12)
        s0, s1 = int(start * rate), min(n, int((start + length) * rate))
        step = 2 * math.pi * freq / rate
        for i in range(s0, s1):
            t = (i - s0) / rate
            env = min(1.0, t / 0.01) * math.exp(-3.0 * t / length)
            ph = step * (i - s0)
            samples[i] += amp * env * sum(h * math.sin(ph * (k + 1)) for k, h in enumerate(harmonics))

    t, degree = 0.0, 0
    while t < seconds:
        degree = max(0, min(len(scale) * 2 - 1, degree + rng.choice([-2, -1, 1, 1, 2, 0])))
        octave, idx = divmod(degree, len(scale))
        length = beat * rng.choice([0.5, 0.5, 1, 1, 1.5])
        note(root + 12 + 12 * octave + scale[idx], t, length, 0.28, (1.0, 0.3, 0.1))
        t += length
    for bar in range(int(seconds / (beat * 4)) + 1):
        note(root - 12 + scale[[0, 3, 4, 0][bar % 4] % len(scale)], bar * beat * 4, beat * 4, 0.3, (1.0, 0.5))
    peak = max(1e-9, max(abs(x) for x in samples))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{n}h", *(int(30000 * x / peak) for x in samples)))
    return buf.getvalue()


def cover_png(seed: int, title: str, size: int = 256) -> bytes:
    """A PNG cover: a two-colour gradient with circles and the title."""
    rng = random.Random(seed)
    c1 = tuple(rng.randrange(40, 220) for _ in range(3))
    c2 = tuple(rng.randrange(40, 220) for _ in range(3))
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    for y in range(size):
        f = y / (size - 1)
        draw.line([(0, y), (size, y)], fill=tuple(int(a + (b - a) * f) for a, b in zip(c1, c2, strict=True)))
    for _ in range(5):
        r = rng.randrange(size // 10, size // 3)
        x, y = rng.randrange(size), rng.randrange(size)
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(255, 255, 255), width=3)
    draw.rectangle([0, size - 40, size, size], fill=(0, 0, 0))
    draw.text((10, size - 30), title[:30], fill=(255, 255, 255))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()
