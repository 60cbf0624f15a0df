"""Decode only the frames a sampler asks for, with PyAV (FFmpeg).

The decoder seeks to the key frame before the first wanted frame and decodes forward,
seeking again only when the next wanted frame is far ahead; only kept frames are converted
to RGB, and the short-side resize happens in swscale during that conversion. Broken files
raise `DecodeError` with a short machine-readable `reason` instead of crashing.

>>> import os, tempfile
>>> from keras_vtn.data.testing import write_video, read_index
>>> path = os.path.join(tempfile.mkdtemp(), "v.webm")
>>> write_video(path, num_frames=30)
>>> frames, info = read_frames(path, [0, 29, 5], short_side=24)
>>> frames.shape, [read_index(f) for f in frames], info.num_frames
((3, 24, 32, 3), [0, 29, 5], 30)
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from collections.abc import Callable, Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter

# Failure reasons, in the order they are checked; `DecodeReport` counts them by name.
# not_a_file: a folder, FIFO or device with a video name (opening a FIFO would block);
# not_a_video: an image FFmpeg reads as one frame; bad_dimensions: a header asking for
# frames no real video has (allocating them could exhaust memory).
REASONS = (
    "missing", "not_a_file", "empty", "unreadable", "not_a_video", "no_video_stream",
    "bad_dimensions", "no_frames", "decode_error", "too_short", "truncated",
)

# Larger than 8K UHD (33 Mpixel) with room to spare; a header beyond this is damaged.
MAX_PIXELS = 1 << 26

# Seek when a key frame lies between here and the next wanted frame and decoding from it
# saves more than this many frames (a seek flushes the decoder and reads the index: a few
# frames' worth). The container's index says where the key frames are (asked before
# decoding, for the wanted frames after a gap); where it cannot, the key frames met while
# decoding predict them. Files re-encoded with key frames every 8-16 frames then decode a
# few frames per sampled frame instead of the whole gap.
SEEK_COST = 4
# With no key frame known, seek when the next wanted frame is further ahead than this (in
# frames): decoding forward through a typical 1-2 s GOP is cheaper than a seek plus a GOP's
# worth of decoding.
SEEK_GAP = 50


class DecodeError(Exception):
    """A video could not give the requested frames; `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass
class VideoInfo:
    """What the container says about its first video stream (display orientation)."""

    num_frames: int
    fps: float
    width: int
    height: int
    rotation: int = 0
    duration: float = 0.0
    # set by `read_frames`: the stream ended well before the frame count in its header
    truncated: bool = False
    # with `truncated`: where the frames stop, and the decoder's error if one stopped them
    stop_detail: str = ""
    # set by `read_frames`: frames the decoder produced to give the requested ones (the cost
    # of decoding forward from key frames; benchmarks compare it to the frames requested)
    decoded_frames: int = 0


def stops_short(count: int, declared: int) -> bool:
    """True when `count` decoded frames fall short of a header's `declared` count.

    Headers often over-count by a frame or two, and a count derived from duration x fps can
    be off by a little more; beyond that the file is cut or damaged.
    """
    return count < declared - max(2, int(0.02 * declared))


def _open(path: str):
    if not os.path.exists(path):
        if os.path.islink(path):
            raise DecodeError("missing", f"{path}: dangling symlink to {os.readlink(path)}")
        raise DecodeError("missing", path)
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        raise DecodeError("unreadable", f"{path}: {error}") from None
    if not stat.S_ISREG(mode):
        kind = "folder" if stat.S_ISDIR(mode) else "FIFO" if stat.S_ISFIFO(mode) else "special file"
        raise DecodeError("not_a_file", f"{path}: a {kind}, not a file")
    if os.path.getsize(path) == 0:
        raise DecodeError("empty", path)
    try:
        container = av.open(path, metadata_errors="ignore")
    except Exception as error:  # FFmpeg raises many error types for bad input
        raise DecodeError("unreadable", f"{path}: {error}") from None
    try:
        name = container.format.name
        # FFmpeg reads a PNG/JPEG with any name as a one-frame "video"
        if name in ("image2", "image2pipe") or name.endswith("_pipe"):
            raise DecodeError("not_a_video", f"{path}: a {name.split('_')[0]} image")
        if not container.streams.video:
            raise DecodeError("no_video_stream", path)
        context = container.streams.video[0].codec_context
        if context.width * context.height > MAX_PIXELS:
            raise DecodeError(
                "bad_dimensions", f"{path}: header declares {context.width}x{context.height}"
            )
    except BaseException:
        container.close()
        raise
    return container


def _stream_info(container) -> VideoInfo:
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 25.0
    duration = 0.0
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    num_frames = int(stream.frames or 0)
    if num_frames <= 0:
        num_frames = int(round(duration * fps))
    else:
        duration = duration or num_frames / fps
    width, height = stream.codec_context.width, stream.codec_context.height
    return VideoInfo(num_frames, fps, width, height, 0, duration)


def probe(path: str) -> VideoInfo:
    """Frame count, fps and display size of a video; decodes only its first frame.

    Raises `DecodeError` when the file is missing, empty, unreadable, has no video stream or
    no decodable frame.
    """
    container = _open(path)
    try:
        info = _stream_info(container)
        if info.num_frames <= 0:
            info.num_frames = _count_frames(container)
            container.close()  # reopened rather than sought: not every file can seek
            container = _open(path)
        try:
            frame = next(container.decode(video=0), None)
        except Exception as error:
            raise DecodeError("decode_error", f"{path}: {error}") from None
        if frame is None:
            raise DecodeError("no_frames", path)
        # The display matrix travels with the frames; report the upright size.
        info.rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        if info.rotation % 180:
            info.width, info.height = info.height, info.width
        return info
    finally:
        container.close()


@dataclasses.dataclass
class StreamScan:
    """Result of `scan`: what the header declares against what really decodes."""

    info: VideoInfo
    frames: int  # frames that decoded
    errors: int  # packets the demuxer or decoder rejected
    first_error: str = ""
    # packets that decoded after the first error: damage in the middle, not a cut file
    good_after_error: int = 0


def scan(path: str) -> StreamScan:
    """Decode every frame of the first video stream (without converting it to RGB).

    The slow, thorough check behind `check-videos`: damaged data anywhere in the file shows
    as `errors`, a cut file as `frames` short of `info.num_frames`. Raises `DecodeError` for
    files that do not open (see `probe`).
    """
    container = _open(path)
    try:
        info = _stream_info(container)
        frames = errors = recovered = 0
        first_error = ""
        packets = container.demux(container.streams.video[0])
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except Exception as error:  # the demuxer cannot go on: the data ends here
                errors += 1
                first_error = first_error or f"after frame {frames}: {error}"
                break
            try:
                frames += len(packet.decode())
            except Exception as error:  # one damaged packet; the decoder resyncs later
                errors += 1
                first_error = first_error or f"after frame {frames}: {error}"
                continue
            if errors and packet.size:  # (the empty packet at the end only flushes)
                recovered += 1
        return StreamScan(info, frames, errors, first_error, recovered)
    finally:
        container.close()


def _count_frames(container) -> int:
    """Frames of a container just opened (so at its start), decoded to the end."""
    count = 0
    try:
        for _ in container.decode(video=0):
            count += 1
    except Exception:  # damaged data: the frames before it are what the file has
        pass
    return count


def _target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


class _Reader:
    """One open container; converts decoded frames to display-oriented RGB."""

    def __init__(self, path: str, short_side: int | None, threads: int, interpolation: str):
        self.path = path
        self.threads = threads
        self._open_stream()
        self.info = _stream_info(self.container)
        self.short_side = short_side
        self.interpolation = interpolation
        self.time_base = float(self.stream.time_base) if self.stream.time_base else 1 / 90000
        self.start = self.stream.start_time or 0
        self.error: Exception | None = None
        self.decoded = 0
        self.reformatter = VideoReformatter()

    def _open_stream(self):
        self.container = _open(self.path)
        self.stream = self.container.streams.video[0]
        if self.threads != 1:
            self.stream.thread_type = "AUTO"
            self.stream.thread_count = self.threads

    def close(self):
        self.container.close()

    def rewind(self):
        """Back to the first frame; reopens the file where the container cannot seek."""
        try:
            self.container.seek(0, stream=self.stream, backward=True)
        except Exception:  # e.g. a Matroska file without cues or frames: EPERM
            self.container.close()
            self._open_stream()

    def index_of(self, frame) -> int | None:
        """The frame number of a decoded frame or a packet, from its timestamp."""
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            return None
        return int(math.floor((pts - self.start) * self.time_base * self.info.fps + 0.5))

    def pts_of(self, index: int) -> int:
        return int(self.start + index / self.info.fps / self.time_base)

    def to_rgb(self, frame) -> np.ndarray:
        rotation = int(getattr(frame, "rotation", 0) or 0) % 360
        width, height = frame.width, frame.height
        if rotation % 180:
            out_h, out_w = _target_size(height, width, self.short_side)
        else:
            out_w, out_h = _target_size(width, height, self.short_side)
        # One reformatter per reader: `frame.to_ndarray(width=...)` builds a new swscale
        # context for every frame, which cost more than the conversion itself (1.07 ms
        # against 0.42 ms per 340x256 frame, identical pixels).
        image = self.reformatter.reformat(
            frame, width=out_w, height=out_h, format="rgb24", interpolation=self.interpolation
        ).to_ndarray()
        if rotation:
            # frame.rotation is the counter-clockwise angle to show the frame upright.
            image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
        return image

    def _frames(self):
        """Decoded frames; a corrupt packet ends the stream (remembered in `self.error`)."""
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
                frames = packet.decode()
            except StopIteration:
                return
            except Exception as error:  # cut or corrupt data: the stream ends here
                self.error = error
                return
            self.decoded += len(frames)
            yield from frames

    def key_before(self, index: int) -> int | None:
        """The key frame a seek to `index` lands on, read from the container's index and one
        packet (nothing decoded), or None when the container cannot say."""
        try:
            self.container.seek(self.pts_of(index), stream=self.stream, backward=True)
            packet = next(self.container.demux(self.stream))
        except Exception:  # unseekable, or damaged: decode without knowing
            return None
        return self.index_of(packet) if packet.is_keyframe else None

    def decode_from(self, index: int | None):
        """(index, frame) pairs from the key frame before `index` (or from the start).

        Frames without timestamps are counted from the start; after a seek such a frame
        yields index -2, telling the caller to decode from the start instead.
        """
        seeked = False
        if index is not None and index > 0:
            try:
                self.container.seek(self.pts_of(index), stream=self.stream, backward=True)
                seeked = True
            except Exception:  # unseekable file: decode forward from where we are
                pass
        count = -1
        for frame in self._frames():
            found = self.index_of(frame)
            if found is None:
                if seeked:
                    yield -2, frame
                    return
                found = count + 1
            count = found
            yield found, frame


def decode_threads_for(parallel_clips: int | None) -> int:
    """FFmpeg threads per decoder when `parallel_clips` clips decode at once: the cores each
    clip has to itself, at most 4. One clip at a time decodes with the whole machine (as
    decord's automatic threading does); as many clips as cores (AUTOTUNE, None or a
    negative count) decode one thread each, which gives the most clips per second when the
    cores are all busy anyway.

    >>> decode_threads_for(None)
    1
    """
    if not parallel_clips or parallel_clips < 0:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, (cores or 1) // parallel_clips))


def read_frames(
    path: str,
    indices: Sequence[int] | np.ndarray,
    *,
    short_side: int | Callable[[], int] | None = None,
    threads: int = 1,
    interpolation: str = "BILINEAR",
    info_callback: Callable[[VideoInfo], np.ndarray] | None = None,
) -> tuple[np.ndarray, VideoInfo]:
    """Decode frames `indices` (any order, repeats allowed) as uint8 RGB `(N, H, W, 3)`.

    `info_callback(info)`, if given, replaces `indices` once the container is open (so a
    sampler can look at the frame count without opening the file twice); its array may have
    any shape and the output is `indices.shape + (H, W, 3)`. `short_side` resizes the shorter
    display side in swscale (a callable is asked after `info_callback`). Indices past the last
    frame that could be decoded repeat the last decoded frame (headers often over-count). When
    the stream ends well before its header's count (a cut file), `info.truncated` is set and,
    with `info_callback`, the indices are drawn again within the frames that exist.
    """
    reader = _Reader(path, short_side, threads, interpolation)
    try:
        info = reader.info
        if info.num_frames <= 0:
            info.num_frames = _count_frames(reader.container)
            reader.close()
            reader = _Reader(path, short_side, threads, interpolation)
            reader.info.num_frames = info.num_frames
        if info_callback is not None:
            indices = info_callback(info)
        if callable(short_side):  # chosen by the callback (random scale jitter)
            reader.short_side = short_side()
        indices = np.asarray(indices, np.int64)
        wanted = np.unique(indices)
        if wanted.size == 0:
            raise ValueError("read_frames needs at least one frame index")
        images, real_count = _decode_wanted(reader, wanted)
        decoded = reader.decoded
        if real_count > 0:
            info.truncated = True
            info.stop_detail = f"frames stop after {real_count} of the {info.num_frames} declared"
            if reader.error is not None:  # cut or damaged data, not a plain end of stream
                info.stop_detail += f" ({reader.error})"
            if info_callback is not None:
                # A cut file: sample again within the frames that really exist.
                info.num_frames = real_count
                indices = np.asarray(info_callback(info), np.int64)
                reader.close()
                reader = _Reader(path, reader.short_side, threads, interpolation)
                images, _ = _decode_wanted(reader, np.unique(indices))
                decoded += reader.decoded
        info.decoded_frames = decoded
    finally:
        reader.close()
    stacked = np.stack([images[i] for i in indices.reshape(-1)])
    return stacked.reshape(indices.shape + stacked.shape[1:]), info


def _should_seek(index: int, target: int, last_key: int | None, interval: int,
                 known_keys: dict[int, int]) -> bool:
    """Whether to seek from frame `index` to the next wanted frame `target`: when the key
    frame the seek lands on (from the container's index, `known_keys`, else predicted every
    `interval` frames from `last_key`; 0: not known yet) saves more than a seek costs, or,
    with no key frame known, when `target` is more than `SEEK_GAP` frames ahead."""
    key = known_keys.get(target)
    if key is None:
        if target - index > SEEK_GAP:
            return True
        if not interval or last_key is None:
            return False
        key = last_key + interval * ((target - last_key) // interval)
    return key > index and (target - key) + SEEK_COST < target - index


def _probe_keys(reader: _Reader, wanted: np.ndarray) -> dict[int, int]:
    """Key frames before the wanted frames that follow a gap (where a seek may pay), from
    the container's index; the reader is back at the start afterwards."""
    gaps = zip(wanted[:-1], wanted[1:], strict=True)
    targets = [int(b) for a, b in gaps if b - a > SEEK_COST + 1]
    if not targets:
        return {}
    keys = {}
    for target in targets:
        key = reader.key_before(target)
        if key is None:
            break  # the container cannot say: decoding learns the key frames instead
        keys[target] = key
    reader.rewind()
    return keys


def _decode_wanted(reader: _Reader, wanted: np.ndarray) -> tuple[dict[int, np.ndarray], int]:
    """Images for `wanted` (sorted unique), and the real frame count if the stream ended well
    before its header's count while frames were still wanted (else -1)."""
    images: dict[int, np.ndarray] = {}
    pos = 0
    last_frame = None  # the last decoded frame, converted only if the stream ends early
    last_index = -1
    restarted = False
    # Key frames met while decoding forward: the last one, and the longest distance between
    # two met in one forward run (consecutive then); the longest, so a scene-cut key frame
    # does not make later ones look closer than they are.
    last_key, interval = None, 0
    known_keys = _probe_keys(reader, wanted)
    try:
        seek_to: int | None = int(wanted[0])
        while pos < len(wanted):
            jumped = False
            first = True
            run_key = None
            for index, frame in reader.decode_from(seek_to):
                overshot = first and seek_to and index > seek_to
                if (overshot or index == -2) and not restarted:
                    # A bad index or missing timestamps: decode from the start instead.
                    restarted = True
                    reader.rewind()
                    seek_to = None
                    jumped = True
                    break
                first = False
                last_frame, last_index = frame, index
                if frame.key_frame:
                    if run_key is not None and index > run_key:
                        interval = max(interval, index - run_key)
                    run_key = last_key = index
                if index < wanted[pos]:
                    continue
                image = reader.to_rgb(frame)
                while pos < len(wanted) and wanted[pos] <= index:
                    images[int(wanted[pos])] = image
                    pos += 1
                if pos < len(wanted) and _should_seek(index, int(wanted[pos]), last_key,
                                                      interval, known_keys):
                    seek_to = int(wanted[pos])
                    jumped = True
                    break
            if first and seek_to and not restarted:
                # Nothing after the seek (a cut file shorter than its header): from the start.
                restarted = True
                reader.rewind()
                seek_to = None
                continue
            if not jumped:
                break  # end of stream
    except Exception as error:  # corrupt packets: keep what was decoded so far
        if last_frame is None:
            raise DecodeError("decode_error", f"{reader.path}: {error}") from None
    if last_frame is None:
        if reader.error is not None:
            raise DecodeError("decode_error", f"{reader.path}: {reader.error}")
        raise DecodeError("no_frames", reader.path)
    real_count = -1
    if pos < len(wanted):  # past the real end: repeat the last frame
        # Headers often over-count by a frame or two; more than that means a cut file.
        if stops_short(last_index + 1, reader.info.num_frames):
            real_count = last_index + 1
        image = reader.to_rgb(last_frame)
        for i in wanted[pos:]:
            images[int(i)] = image
    return images, real_count
