"""Audio front end without torchaudio/librosa: WAV decoding, fixed-length clips, loudness
normalisation, additive noise at a chosen SNR and a log-mel spectrogram (torch.stft + a mel filterbank built from
the HTK mel formula `mel(f) = 2595 log10(1 + f / 700)`)."""

from __future__ import annotations

import io
import wave
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import MMRobustError

LOG_FLOOR = 1e-6  # added to mel power before the log: ~ -60 dB re. a full-scale tone


def read_wav(data: bytes, name: str, sample_rate: int) -> np.ndarray:
    """Decode a mono 16-bit PCM WAV to float32 in [-1, 1); `name` is only for error messages."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            frames = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise MMRobustError(f"{name}: not a readable WAV file ({e})") from None
    if (channels, width, rate) != (1, 2, sample_rate):
        raise MMRobustError(
            f"{name}: expected mono 16-bit {sample_rate} Hz PCM, got {channels} channel(s), {8 * width}-bit, {rate} Hz"
        )
    if n == 0 or len(frames) != 2 * n:
        raise MMRobustError(f"{name}: truncated WAV ({len(frames) // 2} of {n} samples)")
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def center_fit(clips: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad or crop every clip around its centre to `length` samples.

    Returns the clips (N, length) and how many samples of each are real signal (N,).
    """
    out = np.zeros((len(clips), length), dtype=np.float32)
    kept = np.minimum([len(c) for c in clips], length)
    for i, (clip, k) in enumerate(zip(clips, kept, strict=True)):
        src, dst = (len(clip) - k) // 2, (length - k) // 2
        out[i, dst : dst + k] = clip[src : src + k]
    return out, kept


def signal_power(clips: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Mean square (N,) of each clip over its `kept` real samples (padding does not dilute it)."""
    return np.square(clips).sum(axis=1, dtype=np.float64) / kept


def normalize_rms(clips: np.ndarray, kept: np.ndarray, rms: float = 0.1) -> np.ndarray:
    """Scale each clip to root-mean-square `rms` over its real samples (0.1 = -20 dBFS).

    This removes the recording gain, which differs between FSDD speakers and would otherwise
    let a model recognise the speaker's microphone level rather than the digit.
    """
    scale = rms / np.sqrt(np.maximum(signal_power(clips, kept), 1e-12))  # (N,); silent clips stay 0
    return clips * scale.astype(np.float32)[:, None]


def add_noise(clips: np.ndarray, kept: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise over the whole clip at `snr_db` relative to each clip's own
    signal power. The noise also covers the padding, so a clip's length cannot be read off
    its silence."""
    sigma = np.sqrt(signal_power(clips, kept) / 10 ** (snr_db / 10)).astype(np.float32)[:, None]  # (N, 1)
    return clips + sigma * rng.standard_normal(clips.shape, dtype=np.float32)


def hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """Triangular filters (n_mels, n_fft // 2 + 1) with centres equally spaced in mel.

    Filter i rises linearly from edge i to a peak of 1 at edge i+1 and falls to 0 at edge
    i+2 (n_mels + 2 edges from f_min to f_max, default Nyquist); no area normalisation.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    mels = torch.linspace(float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))), n_mels + 2)
    edges = mel_to_hz(mels.double())  # (n_mels + 2,)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1) each
    rising = (freqs - lo) / (mid - lo)  # (n_mels, F)
    falling = (hi - freqs) / (hi - mid)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def log_mel(clips: Tensor, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> Tensor:
    """Log mel power spectrogram of (N, L) clips -> (N, n_mels, 1 + L // hop).

    Hann window of n_fft samples, frames centred on multiples of `hop` (torch.stft with
    center=True, reflect padding), power |X|^2, log(mel + LOG_FLOOR).
    """
    spec = torch.stft(
        clips, n_fft, hop, window=torch.hann_window(n_fft), center=True, return_complex=True
    )  # (N, n_fft // 2 + 1, frames)
    mel = mel_filterbank(n_fft, n_mels, sample_rate) @ spec.abs().square()  # (N, n_mels, frames)
    return torch.log(mel + LOG_FLOOR)
