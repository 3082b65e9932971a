"""Resampling: band-limited (soxr, not interpolation), and exact-length streaming."""

import numpy as np
import pytest

from personaplex_tui.audio import StreamResampler, resample


def test_resample_is_band_limited_not_linear_interpolation():
    # A 10 kHz tone is above 8 kHz (the Nyquist of 16 kHz): a real resampler removes it,
    # linear interpolation aliases it to 6 kHz at a large amplitude.
    t = np.arange(24000) / 24000
    tone = np.sin(2 * np.pi * 10000 * t).astype(np.float32)
    out = resample(tone, 24000, 16000)
    assert len(out) == 16000
    assert np.sqrt(np.mean(out[2000:-2000] ** 2)) < 0.01


@pytest.mark.parametrize(("src", "dst"), [(24000, 48000), (44100, 24000), (24000, 16000)])
def test_stream_output_is_exact_and_matches_offline_resampling(src, dst):
    rng = np.random.default_rng(src + dst)
    t = np.arange(3 * src) / src
    x = (0.4 * np.sin(2 * np.pi * 300 * t) + 0.2 * np.sin(2 * np.pi * 1234 * t)).astype(np.float32)
    r = StreamResampler(src, dst)
    out, fed = [], 0
    while fed < len(x):
        n = int(rng.integers(1, 4000))
        chunk = x[fed : fed + n]
        fed += len(chunk)
        y = r.process(chunk)
        out.append(y)
        assert sum(len(o) for o in out) == fed * dst // src  # exact after every chunk
    y = np.concatenate(out)
    assert r.short_outputs == 0
    assert not y[: r.latency_samples].any()  # led by exactly its announced latency
    ref = resample(x, src, dst)
    body = y[r.latency_samples :]
    n = len(body)
    np.testing.assert_allclose(body[dst // 10 : n], ref[dst // 10 : n], atol=2e-3)
    r.reset()
    assert len(r.process(x[:src])) == dst and r.short_outputs == 0


def test_split_frames_pads_the_last_frame():
    from personaplex_tui.audio import split_frames

    x = np.arange(1920 * 2 + 5, dtype=np.float32)
    frames = split_frames(x)
    assert frames.shape == (3, 1920) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames.reshape(-1)[: len(x)], x)
    assert not frames[2, 5:].any()
    assert split_frames(np.zeros(0, np.float32)).shape == (0, 1920)


@pytest.mark.parametrize(("src", "n"), [(44100, 3 * 44100 + 17), (48000, 1), (16000, 50_001)])
def test_resampling_in_blocks_gives_the_very_samples_of_resampling_whole(src, n):
    """The offline sound check resamples hour-long recordings a block at a time: soxr's stream,
    flushed at the end, makes exactly the samples (and the length) of resampling whole."""
    from personaplex_tui.audio.resample import resample_blocks, resampled_length

    rng = np.random.default_rng(n)
    x = (0.3 * rng.standard_normal(n)).astype(np.float32)
    cuts = np.cumsum(rng.integers(1, 9000, size=n // 1000 + 2))
    blocks = np.split(x, cuts[cuts < n])
    out = np.concatenate(list(resample_blocks(blocks, src, 24000)))
    np.testing.assert_array_equal(out, resample(x, src, 24000))
    assert len(out) == resampled_length(n, src, 24000)
