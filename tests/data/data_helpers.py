"""Which test videos exist and what they are (shared by the data tests and conftest)."""

from __future__ import annotations

# name -> (relative path, write_video kwargs); 64x48 unless stated, GOP 12 so seeking matters
GOOD = {
    "mp4": ("good/h264.mp4", dict(num_frames=75, fps=25)),
    "webm": ("good/vp9.webm", dict(num_frames=50, fps=25)),
    "mkv": ("good/h264_30fps.mkv", dict(num_frames=90, fps=30)),
    "avi": ("good/mpeg4.avi", dict(num_frames=40, fps=25)),
}

# files that decode, but only with care (conversion, rotation, looping)
AWKWARD = {
    "one_frame": ("awkward/one_frame.mp4", dict(num_frames=1)),
    "odd_sized": ("awkward/odd_sized.webm", dict(num_frames=20, width=65, height=49)),
    "rotated": ("awkward/rotated.mp4", dict(num_frames=20, rotation=90)),
    "grayscale": ("awkward/grayscale.mkv", dict(num_frames=20, codec="ffv1", pix_fmt="gray")),
    "high_bit_depth": ("awkward/high_bit_depth.mp4", dict(num_frames=20, pix_fmt="yuv420p10le")),
    # index first, then cut in half: opens, header promises 75 frames, about half decode
    "cut_faststart": ("awkward/cut_faststart.mp4", dict(num_frames=75, faststart=True, noise=20)),
    # a VP9 WebM named .mp4: FFmpeg probes the content, not the extension
    "wrong_extension": ("awkward/wrong_extension.mp4", None),
}

# files no decoder can use -> expected failure reason
BROKEN = {
    "zero_byte": ("broken/zero_byte.mp4", "empty"),
    "truncated": ("broken/truncated.mp4", "unreadable"),
    "wrong_container": ("broken/wrong_container.mp4", "unreadable"),
    "audio_only": ("broken/audio_only.mp4", "no_video_stream"),
}
