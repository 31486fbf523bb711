"""One pass over a movie: per-frame pixel sums over many binary masks, with the read overlapped.

:func:`iter_mask_sums` streams a T x H x W movie in blocks of frames and yields, for every frame, the
sum of the pixel values under each of K binary masks (ROI masks, neuropil annuli, pairwise mask
intersections: whatever the caller stacks). It is the single reader of movie frames for extraction
and demixing, so one read of the movie serves both.

Kernel
------
Each mask is decomposed once into *vertical runs* (column ``c``, rows ``r0 .. r1 - 1``), and each run
into two *row events*: at row ``r1`` add the column sum of rows ``< r1`` to the mask's total, at row
``r0`` subtract the column sum of rows ``< r0``. The kernel sweeps down the rows of a group of
:data:`SWEEP_FRAMES` frames at once, keeping one running column-sum line per frame of the group
(group x box width integers, in the L1 cache): at each row it applies that row's events (one add per
frame of the group into the mask's totals) and then adds the row's pixels to the column sums (a
contiguous, vectorized add). Each frame is read once, sequentially, and the event list, ordered by
row, is walked once per group instead of once per frame. A frame therefore costs one pass over its
pixels plus two adds per run, instead of one gather per mask pixel (neuropil annuli overlap heavily,
so mask pixels outnumber frame pixels). The kernel is compiled by numba (``nogil``), so it runs while
another thread reads the next block; with ``kernel_threads`` > 1 the groups of a block are shared out
over numba's worker threads.

Exactness: for integer movies of at most 16 bits the sums are accumulated in integers and are exact:
in int32 when no mask's sum can leave the int32 range (the arithmetic wraps, so intermediate column
sums and totals may overflow while the final totals are exact), in int64 otherwise. They equal, bit
for bit, the float64 sparse products used before (sums of integers below 2**53 are exact in float64).
Float movies, or integer movies wider than 16 bits, take the float64 sparse product (:func:`release_platform.ophys.io.iter_sparse_frame_sums`),
whose summation order is unchanged.

Read overlap
------------
A reader thread fills the next block (HDF5 ``read_direct`` of the masks' bounding box) into the
second of two buffers while the caller works on the current one, so the read of block k+1 overlaps
the compute of block k. Memory: two blocks (default budget 64 MiB each) and, per kernel thread, one
group of column sums and mask totals, whatever the movie length.

Mapped movies
-------------
A movie stored uncompressed in a local HDF5 file (no filters, ``sec2`` driver, native byte order,
contiguous or in chunks of whole frames) is not copied at all: :class:`MappedBlocks` maps the file
read-only and the kernel sweeps the box straight out of the mapped frames. A thread keeps the next
blocks faulted in (``MADV_WILLNEED`` + ``MADV_POPULATE_READ``), so a movie that is not in the page cache
is read from disk while the kernel works, and the pages of swept blocks are unmapped again
(``MADV_DONTNEED``), so the process does not keep the movie resident. Chunk extents are checked
against the file size before anything is mapped. Every other movie (compressed, chunks smaller than a
frame, chunks never written, other drivers, arrays) is read by :class:`BlockReader`; so is every movie
when the ``RELEASE_PLATFORM_MOVIE_MMAP`` environment variable is ``0`` (or ``movie_mmap=False``).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import h5py
import numpy as np
import scipy.sparse as sparse

from release_platform.errors import InputError
from release_platform.ophys.io import (
    DEFAULT_BLOCK_BYTES, check_mask_pixels, choose_block_frames, iter_sparse_frame_sums, movie_shape,
)


@dataclass(frozen=True)
class MaskRuns:
    """K binary masks as vertical runs inside their common bounding box.

    ``box`` = (row0, row1, col0, col1), half-open, in frame coordinates. Run ``j`` covers rows
    ``run_r0[j] .. run_r1[j] - 1`` of box column ``run_col[j]``; the runs of mask ``i`` are
    ``run_ptr[i] .. run_ptr[i + 1] - 1``.
    """

    n_masks: int
    box: tuple[int, int, int, int]
    run_r0: np.ndarray
    run_r1: np.ndarray
    run_col: np.ndarray
    run_ptr: np.ndarray

    @classmethod
    def from_masks(
        cls, masks: sparse.csr_matrix, frame_shape: tuple[int, int], box: tuple[int, int, int, int] | None = None
    ) -> "MaskRuns":
        """From a K x (H*W) sparse matrix whose non-zero entries mark mask pixels (values are ignored).

        ``box``: the box the runs refer to (must contain every mask pixel); default the masks' bounding box.
        """
        matrix = sparse.csr_matrix(masks)
        matrix.eliminate_zeros()
        width = frame_shape[1]
        n_masks = matrix.shape[0]
        if matrix.nnz == 0:
            empty = np.zeros(0, dtype=np.int64)
            return cls(n_masks, box or (0, 0, 0, 0), empty, empty, empty, np.zeros(n_masks + 1, dtype=np.int64))
        matrix.sort_indices()
        from release_platform.ophys._run_sums import vertical_runs

        tight, run_r0, run_r1, run_col, run_ptr = vertical_runs(
            matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64), int(width)
        )
        tight = tuple(int(v) for v in tight)
        if box is None:
            return cls(n_masks, tight, run_r0, run_r1, run_col, run_ptr)
        box = tuple(int(v) for v in box)
        if not (box[0] <= tight[0] and tight[1] <= box[1] and box[2] <= tight[2] and tight[3] <= box[3]):
            raise ValueError(f"the mask pixels (box {tight}) do not lie inside the box {box}")
        rows, cols = tight[0] - box[0], tight[2] - box[2]
        return cls(n_masks, box, run_r0 + rows, run_r1 + rows, run_col + cols, run_ptr)

    def events(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The runs as row events of the sweep kernel: ``(ev_ptr, ev_col, ev_mask)``.

        A run of mask ``i`` over rows ``r0 .. r1 - 1`` of column ``c`` adds the column sum at row ``r1``
        (sum of rows ``< r1``) to mask ``i`` and subtracts the column sum at row ``r0``; the subtraction
        is left out when ``r0`` is 0 (the sum is 0). For box height ``h``, the additions at row ``r`` are
        events ``ev_ptr[2r] .. ev_ptr[2r + 1] - 1`` and the subtractions ``ev_ptr[2r + 1] .. ev_ptr[2r + 2] - 1``,
        ordered by column within a row; ``ev_ptr`` has ``2 (h + 1) + 1`` entries.
        """
        height = self.box[1] - self.box[0]
        owner = np.repeat(np.arange(self.n_masks, dtype=np.int64), np.diff(self.run_ptr))
        starts = self.run_r0 > 0
        key = np.concatenate([2 * self.run_r1, 2 * self.run_r0[starts] + 1])
        col = np.concatenate([self.run_col, self.run_col[starts]])
        mask = np.concatenate([owner, owner[starts]])
        order = np.lexsort((mask, col, key))
        ev_ptr = np.zeros(2 * (height + 1) + 1, dtype=np.int64)
        np.cumsum(np.bincount(key, minlength=2 * (height + 1)), out=ev_ptr[1:])
        return ev_ptr, col[order].astype(np.int32), mask[order].astype(np.int32)


MOVIE_MMAP_ENV = "RELEASE_PLATFORM_MOVIE_MMAP"
"""Environment variable: ``0`` reads every movie through :class:`BlockReader` (default: map the movies that allow it)."""

KERNEL_THREADS_ENV = "RELEASE_PLATFORM_KERNEL_THREADS"
"""Environment variable: default number of threads of the integer kernel (1 when unset)."""

SWEEP_FRAMES = 4
"""Frames summed per sweep of the kernel: their column sums (4 x box width integers) stay in the L1 cache.
Measured at 512 x 512 with 590 masks (kernel time per frame, block in memory): 4 frames 58 us, 8 frames
69 us, 16 frames 74 us (more frames per sweep means more concurrent read streams and cache pressure)."""


def _kernels():
    """The compiled kernels, serial and parallel (numba is imported, and the kernels loaded from its cache or
    compiled, on first use)."""
    from release_platform.ophys._run_sums import sweep_sums, sweep_sums_parallel

    return sweep_sums, sweep_sums_parallel


def load_kernel(dtype: Any = np.uint16, *, kernel_threads: int | None = None) -> None:
    """Import numba and load (or compile) the kernel for movies of ``dtype`` now: a once-per-process cost
    (about a second on a quiet machine; compiled code is cached on disk) that benchmarks keep out of their timings."""
    if exact_integer_kernel(dtype):
        movie = np.zeros((2 * SWEEP_FRAMES + 1, 1, 1), dtype=dtype)  # enough frames for the parallel kernel
        masks = sparse.csr_matrix(np.ones((1, 1)))
        for _ in iter_mask_sums(movie, masks, kernel_threads=kernel_threads):
            pass
        # mapped frames are read-only arrays, a type of their own to numba
        movie.setflags(write=False)
        runs = MaskRuns.from_masks(masks, (1, 1))
        kernels = _kernels()[: 2 if _kernel_threads(kernel_threads) > 1 else 1]
        for kernel, scratch in zip(kernels, ((), (2,))):
            colsum = np.zeros((*scratch, SWEEP_FRAMES, 1), np.int32)
            acc = np.zeros((*scratch, 1, SWEEP_FRAMES), np.int32)
            kernel(movie, 0, 0, *runs.events(), np.empty((1, movie.shape[0])), colsum, acc)


def exact_integer_kernel(dtype: Any) -> bool:
    """Whether movies of ``dtype`` take the exact integer run kernel (integers of at most 16 bits)."""
    dtype = np.dtype(dtype)
    return dtype.kind in "iu" and dtype.itemsize <= 2


class _BlocksAhead:
    """What :class:`BlockReader` and :class:`MappedBlocks` share: a one-thread pool working ahead of the consumer
    (``self._pool``, futures by block index in ``self._pending``), stopped by :meth:`_stop` and on leaving a
    ``with`` block."""

    _pool: ThreadPoolExecutor
    _pending: dict

    def _stop(self) -> None:
        """Drop the work not started and wait for the work in progress."""
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def close(self) -> None:
        """Stop working ahead."""
        self._stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BlockReader(_BlocksAhead):
    """Consecutive blocks of ``step`` frames of ``movie[:, r0:r1, c0:c1]``, read ahead by a thread.

    Reading starts when the reader is made (so the caller can prepare while the first blocks arrive)
    and keeps two buffers filled ahead of the consumer: while block k is in use, block k+1 is read,
    and block k+2 is read into block k's buffer as soon as the next block is requested. Iterate once
    for ``(t0, t1, block)``; a yielded block is valid until the next one is requested. A read error
    becomes an InputError naming the frames, and so does a file that shrank after the reader started (HDF5's
    ``sec2`` driver reads the bytes past the end of a file as zeros, which would pass for frames). Use as a
    context manager (or call :meth:`close`), so a reader that is not iterated to the end stops its thread.
    """

    origin = (0, 0)
    """Where the box starts in a yielded block (row, column): blocks hold the box only."""

    def __init__(
        self,
        movie: Any,
        box: tuple[int, int, int, int],
        step: int,
        *,
        entity: str | None = None,
        path: str | os.PathLike | None = None,
    ) -> None:
        n_frames = int(movie.shape[0])
        self.box = tuple(int(v) for v in box)
        r0, r1, c0, c1 = self.box
        self.step = max(1, min(int(step), n_frames))
        self._is_h5 = isinstance(movie, h5py.Dataset)
        if path is None and self._is_h5:  # errors name the file
            path = movie.file.filename
        self._movie, self._entity, self._path = movie, entity, path
        self._ranges = [(t0, min(n_frames, t0 + self.step)) for t0 in range(0, n_frames, self.step)]
        count = min(2, len(self._ranges))
        dtype = np.dtype(movie.dtype).newbyteorder("=")  # the kernel takes native byte order; reads convert
        self._buffers = [np.empty((self.step, r1 - r0, c1 - c0), dtype=dtype) for _ in range(count)]
        self._fd = _file_descriptor(movie) if self._is_h5 else None
        self._file_size = os.fstat(self._fd).st_size if self._fd is not None else None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="movie-reader")
        self._pending = {index: self._pool.submit(self._read, index) for index in range(count)}

    def _buffer(self, index: int) -> np.ndarray:
        t0, t1 = self._ranges[index]
        return self._buffers[index % len(self._buffers)][: t1 - t0]

    def _read(self, index: int) -> None:
        t0, t1 = self._ranges[index]
        r0, r1, c0, c1 = self.box
        block = self._buffer(index)
        try:
            if self._is_h5:
                self._movie.read_direct(block, source_sel=np.s_[t0:t1, r0:r1, c0:c1])
            else:
                block[...] = self._movie[t0:t1, r0:r1, c0:c1]
        except (OSError, ValueError) as exc:
            raise InputError(
                f"movie frames {t0}-{t1 - 1} cannot be read ({exc})", entity=self._entity, path=self._path
            ) from None
        if self._file_size is not None:  # checked after the read: the bytes it took were in the file
            size = os.fstat(self._fd).st_size
            if size < self._file_size:
                raise InputError(
                    f"movie frames {t0}-{t1 - 1} cannot be read: the file shrank from {self._file_size} to {size} "
                    "bytes while it was being read (truncated or overwritten)",
                    entity=self._entity, path=self._path,
                )

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        try:
            for index, (t0, t1) in enumerate(self._ranges):
                self._pending.pop(index).result()
                yield t0, t1, self._buffer(index)
                ahead = index + len(self._buffers)  # block `index` is released: refill its buffer
                if ahead < len(self._ranges):
                    self._pending[ahead] = self._pool.submit(self._read, ahead)
        finally:
            self.close()

    def close(self) -> None:
        """Stop reading: reads not started are dropped, one in progress is waited for (it owns a buffer)."""
        self._stop()


def _file_descriptor(movie: h5py.Dataset) -> int | None:
    """The descriptor of the file ``movie`` is read from, when HDF5 reads it through one (the ``sec2`` driver)."""
    if movie.file.driver != "sec2":
        return None
    try:
        return int(movie.file.id.get_vfd_handle())
    except (OSError, ValueError, TypeError):
        return None


MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)
"""madvise: fault the pages of a range in now (Linux >= 5.14), reporting a failed read as an error, not a SIGBUS."""


def _madvise(address: int, length: int, advice: int) -> None:
    """``madvise(2)`` through ctypes, which lets other threads run during the call (``mmap.madvise`` holds the GIL,
    so a prefetch reading a block from disk would stop the caller's Python code for as long)."""
    libc = _libc()
    if libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(length), ctypes.c_int(advice)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def movie_mmap_enabled(movie_mmap: bool | None) -> bool:
    """Whether movies may be mapped: ``movie_mmap`` if given, else ``RELEASE_PLATFORM_MOVIE_MMAP`` (``0`` = no)."""
    if movie_mmap is not None:
        return bool(movie_mmap)
    value = os.environ.get(MOVIE_MMAP_ENV, "1").strip().lower()
    if value not in ("0", "1", "false", "true", "no", "yes", ""):
        raise InputError(f"{MOVIE_MMAP_ENV} must be 0 or 1, got {value!r}")
    return value not in ("0", "false", "no")


def mapped_extents(
    movie: Any, *, entity: str | None = None, path: str | os.PathLike | None = None
) -> list[tuple[int, int, int]] | None:
    """Where the frames of ``movie`` lie in its file, if the kernel can sweep them there: ``[(t0, t1, offset)]``.

    Frames ``t0 .. t1 - 1`` are stored whole and in order from byte ``offset`` of the file (consecutive
    chunks that follow each other in the file form one extent). None unless ``movie`` is an h5py dataset
    of an integer dtype the exact kernel takes, in native byte order, without filters, in a file opened
    with the ``sec2`` driver, stored contiguously or in chunks of whole frames, every chunk written.
    InputError if an extent runs past the end of the file (a truncated or corrupt file).
    """
    if not isinstance(movie, h5py.Dataset) or not exact_integer_kernel(movie.dtype) or not movie.dtype.isnative:
        return None
    if movie.file.driver != "sec2" or movie.ndim != 3:
        return None
    n_frames, height, width = (int(v) for v in movie.shape)
    frame_bytes = height * width * movie.dtype.itemsize
    plist = movie.id.get_create_plist()
    if plist.get_nfilters() != 0 or plist.get_external_count() != 0:
        return None
    layout = plist.get_layout()
    if layout == h5py.h5d.CONTIGUOUS:
        offset = movie.id.get_offset()
        if offset is None:  # never written: the fill value
            return None
        extents = [(0, n_frames, int(offset))]
    elif layout == h5py.h5d.CHUNKED:
        chunk = tuple(int(v) for v in movie.chunks)
        if chunk[1:] != (height, width):
            return None
        length = chunk[0]
        n_chunks = -(-n_frames // length)
        infos = _chunk_infos(movie.id)
        if len(infos) != n_chunks:  # chunks never written hold the fill value
            return None
        extents = []
        for info in sorted(infos, key=lambda item: item.chunk_offset[0]):
            t0 = int(info.chunk_offset[0])
            if int(info.size) != length * frame_bytes or t0 % length or info.filter_mask:
                return None
            t1, offset = min(n_frames, t0 + length), int(info.byte_offset)
            if extents and extents[-1][1] == t0 and offset == extents[-1][2] + (t0 - extents[-1][0]) * frame_bytes:
                extents[-1] = (extents[-1][0], t1, extents[-1][2])  # the chunk follows the previous one in the file
            else:
                extents.append((t0, t1, offset))
        if [e[0] for e in extents][:1] != [0] or any(a[1] != b[0] for a, b in zip(extents, extents[1:])):
            return None
    else:  # compact, virtual
        return None
    file_size = os.fstat(movie.file.id.get_vfd_handle()).st_size
    for t0, t1, offset in extents:
        stored = (t1 - t0) * frame_bytes
        if offset + stored > file_size:
            first = t0 + max(0, file_size - offset) // frame_bytes
            raise InputError(
                f"movie frames {first}-{t1 - 1} cannot be read: they lie past the end of the file "
                f"(bytes {offset}-{offset + stored - 1} of a {file_size}-byte file); the file is truncated or corrupt",
                entity=entity,
                path=path if path is not None else movie.file.filename,
            )
    return extents


def _chunk_infos(dataset_id: Any) -> list[Any]:
    """The stored chunks of a chunked dataset (HDF5's chunk index, read in one walk where HDF5 allows it)."""
    if hasattr(dataset_id, "chunk_iter"):
        infos: list[Any] = []
        dataset_id.chunk_iter(infos.append)
        return infos
    return [dataset_id.get_chunk_info(i) for i in range(dataset_id.get_num_chunks())]


class MappedBlocks(_BlocksAhead):
    """Blocks of whole frames of an uncompressed h5 movie, mapped read-only from its file (see :func:`mapped_extents`).

    The same interface as :class:`BlockReader`, but a yielded block is a read-only view of whole frames
    (``t1 - t0`` x H x W) in the mapping, and the box starts at :attr:`origin` in it. A thread faults the
    next two blocks in ahead of the consumer (reading them from disk if they are not in the page cache);
    a block's pages are unmapped once the next block is requested. A page that cannot be read becomes an
    InputError naming the frames.
    """

    def __init__(
        self,
        movie: h5py.Dataset,
        box: tuple[int, int, int, int],
        step: int,
        extents: list[tuple[int, int, int]],
        *,
        entity: str | None = None,
        path: str | os.PathLike | None = None,
    ) -> None:
        n_frames, height, width = (int(v) for v in movie.shape)
        self.box = tuple(int(v) for v in box)
        self.origin = (self.box[0], self.box[2])
        self.step = max(1, min(int(step), n_frames))
        self._entity, self._path = entity, path if path is not None else movie.file.filename
        self._dtype, self._frame = movie.dtype, (height, width)
        frame_bytes = height * width * movie.dtype.itemsize
        self._ranges = [
            (t, min(t1, t + self.step), offset + (t - t0) * frame_bytes)
            for t0, t1, offset in extents
            for t in range(t0, t1, self.step)
        ]
        self._frame_bytes = frame_bytes
        self._map = mmap.mmap(movie.file.id.get_vfd_handle(), 0, access=mmap.ACCESS_READ)
        self._map.madvise(mmap.MADV_SEQUENTIAL)
        self._bytes = np.frombuffer(self._map, dtype=np.uint8)  # the mapping's address, for _madvise
        self._populate = True
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="movie-prefetch")
        self._pending = {index: self._pool.submit(self._fault_in, index) for index in range(min(2, len(self._ranges)))}

    def _pages(self, index: int) -> tuple[int, int]:
        """``(start, length)`` of the pages holding block ``index``."""
        t0, t1, offset = self._ranges[index]
        start = offset - offset % mmap.PAGESIZE
        return start, offset + (t1 - t0) * self._frame_bytes - start

    def _fault_in(self, index: int, release: int | None = None) -> None:
        """Unmap the pages of block ``release`` (if given) and fault in those of block ``index`` (if any)."""
        address = self._bytes.ctypes.data
        if release is not None:
            start, length = self._pages(release)
            _madvise(address + start, length, mmap.MADV_DONTNEED)
        if index >= len(self._ranges):
            return
        start, length = self._pages(index)
        _madvise(address + start, length, mmap.MADV_WILLNEED)
        if self._populate:
            try:
                _madvise(address + start, length, MADV_POPULATE_READ)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    t0, t1, _ = self._ranges[index]
                    raise InputError(
                        f"movie frames {t0}-{t1 - 1} cannot be read ({exc.strerror}: the file ends before them "
                        "or a read failed)", entity=self._entity, path=self._path
                    ) from None
                self._populate = False  # EINVAL: a kernel without MADV_POPULATE_READ
        # touch one byte per page (the extents were checked against the file size)
        int(self._bytes[start : start + length : mmap.PAGESIZE].max())

    def _block(self, index: int) -> np.ndarray:
        t0, t1, offset = self._ranges[index]
        count = (t1 - t0) * self._frame[0] * self._frame[1]
        return np.frombuffer(self._map, dtype=self._dtype, count=count, offset=offset).reshape(t1 - t0, *self._frame)

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        try:
            for index, (t0, t1, _) in enumerate(self._ranges):
                self._pending.pop(index).result()
                yield t0, t1, self._block(index)
                ahead = index + 2  # block `index` is swept: unmap it, fault in the block after next
                self._pending[ahead] = self._pool.submit(self._fault_in, ahead, index)
        finally:
            self.close()

    def close(self) -> None:
        """Stop faulting blocks in and unmap the file once no yielded block refers to it any more."""
        self._stop()
        self._bytes = np.empty(0, np.uint8)
        try:
            self._map.close()
        except BufferError:  # a yielded block is still in use: the mapping goes with the last view of it
            pass


def open_blocks(
    movie: Any,
    box: tuple[int, int, int, int],
    step: int,
    *,
    movie_mmap: bool | None = None,
    entity: str | None = None,
    path: str | os.PathLike | None = None,
) -> BlockReader | MappedBlocks:
    """Blocks of ``step`` frames covering ``movie[:, r0:r1, c0:c1]``, started now: mapped from the file when
    the movie allows it and mapping is enabled (:func:`movie_mmap_enabled`), else a :class:`BlockReader`."""
    if movie_mmap_enabled(movie_mmap):
        extents = mapped_extents(movie, entity=entity, path=path)
        if extents is not None:
            try:
                return MappedBlocks(movie, box, step, extents, entity=entity, path=path)
            except (OSError, ValueError):  # the file cannot be mapped (a file system without mmap): read it
                pass
    return BlockReader(movie, box, step, entity=entity, path=path)


def iter_blocks(
    movie: Any,
    box: tuple[int, int, int, int],
    step: int,
    *,
    entity: str | None = None,
    path: str | os.PathLike | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(t0, t1, block)`` for consecutive blocks of ``step`` frames of ``movie[:, r0:r1, c0:c1]``
    (a :class:`BlockReader` started now); a yielded block is valid until the next one is requested."""
    with BlockReader(movie, box, step, entity=entity, path=path) as reader:
        yield from reader


def iter_mask_sums(
    movie: Any,
    masks: sparse.spmatrix | sparse.sparray,
    *,
    block_frames: int | None = None,
    budget_bytes: int = DEFAULT_BLOCK_BYTES,
    kernel_threads: int | None = None,
    reader: BlockReader | MappedBlocks | None = None,
    movie_mmap: bool | None = None,
    entity: str | None = None,
    path: str | os.PathLike | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Stream the per-frame pixel sums under K binary masks, block by block.

    ``masks`` is a K x (H*W) sparse matrix over row-major flattened pixels; its non-zero entries
    mark the mask pixels (all weights must be 1). Yields ``(t0, t1, sums)`` with ``sums`` K x (t1 - t0)
    float64, exact for integer movies (see the module docstring). Only the bounding box of the mask
    pixels is read, ``block_frames`` frames at a time (default: :func:`~release_platform.ophys.io.choose_block_frames`).
    ``kernel_threads`` threads run the integer kernel (default: the ``RELEASE_PLATFORM_KERNEL_THREADS``
    environment variable, else 1; the read-ahead thread comes in addition). ``reader``: a
    :class:`BlockReader` or :class:`MappedBlocks` of ``movie`` started earlier (see :func:`open_blocks`;
    its box must contain every mask pixel; its block length replaces ``block_frames``); it is closed when
    the sums are done. ``movie_mmap``: whether an uncompressed h5 movie may be swept in its file mapping
    (default: the ``RELEASE_PLATFORM_MOVIE_MMAP`` environment variable, else yes); the sums are the same.
    """
    try:
        yield from _mask_sums(movie, masks, block_frames, budget_bytes, kernel_threads, reader, movie_mmap, entity, path)
    finally:
        if reader is not None:
            reader.close()


def _mask_sums(movie, masks, block_frames, budget_bytes, kernel_threads, reader, movie_mmap, entity, path):
    """The body of :func:`iter_mask_sums`."""
    n_frames, height, width = movie_shape(movie, entity=entity, path=path)
    matrix = sparse.csr_matrix(masks)
    check_mask_pixels(matrix, (height, width), entity=entity, path=path)
    matrix.eliminate_zeros()
    if matrix.nnz and not np.all(matrix.data == 1):
        raise ValueError("iter_mask_sums takes binary masks (every stored weight 1)")
    if not exact_integer_kernel(movie.dtype) or matrix.nnz == 0:
        if reader is not None:
            reader.close()
        yield from iter_sparse_frame_sums(
            movie, matrix, block_frames=block_frames, budget_bytes=budget_bytes, entity=entity, path=path
        )
        return
    threads = _kernel_threads(kernel_threads)
    runs = MaskRuns.from_masks(matrix, (height, width), box=None if reader is None else reader.box)
    ev_ptr, ev_col, ev_mask = runs.events()
    r0, r1, c0, c1 = runs.box
    if reader is None:
        step = choose_block_frames(movie, (r1 - r0) * (c1 - c0), block_frames=block_frames, budget_bytes=budget_bytes)
        blocks = open_blocks(movie, runs.box, step, movie_mmap=movie_mmap, entity=entity, path=path)
    else:
        step, blocks = reader.step, reader
    row0, col0 = blocks.origin
    serial, parallel = _kernels()
    info = np.iinfo(movie.dtype)
    largest_sum = max(abs(int(info.min)), int(info.max)) * int(np.diff(matrix.indptr).max())
    # int32 arithmetic wraps, so int32 column sums and totals give every mask's sum modulo 2**32: exact
    # when no mask sum can leave the int32 range; int64 otherwise
    sum_dtype = np.int32 if largest_sum < 2**31 else np.int64
    workers = min(threads, -(-step // SWEEP_FRAMES))
    colsum = np.zeros((workers, SWEEP_FRAMES, c1 - c0), dtype=sum_dtype)
    acc = np.zeros((workers, runs.n_masks, SWEEP_FRAMES), dtype=sum_dtype)
    with blocks:
        for t0, t1, block in blocks:
            sums = np.empty((runs.n_masks, t1 - t0))
            if workers > 1 and t1 - t0 > SWEEP_FRAMES:
                _run_parallel(parallel, workers, block, row0, col0, ev_ptr, ev_col, ev_mask, sums, colsum, acc)
            else:
                serial(block, row0, col0, ev_ptr, ev_col, ev_mask, sums, colsum[0], acc[0])
            del block  # a mapped block: no view of the mapping outlives the pass
            yield t0, t1, sums


def _kernel_threads(kernel_threads: int | None) -> int:
    """The number of kernel threads: ``kernel_threads``, else ``RELEASE_PLATFORM_KERNEL_THREADS``, else 1."""
    if kernel_threads is None:
        value = os.environ.get(KERNEL_THREADS_ENV, "1")
        try:
            kernel_threads = int(value)
        except ValueError:
            raise InputError(f"{KERNEL_THREADS_ENV} must be a whole number >= 1, got {value!r}") from None
    if int(kernel_threads) < 1:
        raise InputError(f"kernel_threads must be >= 1, got {kernel_threads}")
    return int(kernel_threads)


def _run_parallel(kernel, workers, block, row0, col0, ev_ptr, ev_col, ev_mask, sums, colsum, acc) -> None:
    """The parallel kernel on ``workers`` of numba's threads (at most as many as numba has)."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(min(workers, numba.config.NUMBA_NUM_THREADS))
    try:
        kernel(block, row0, col0, ev_ptr, ev_col, ev_mask, sums, colsum, acc)
    finally:
        numba.set_num_threads(previous)
