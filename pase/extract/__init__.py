"""Batch feature extraction: ``pase extract IN... --out DIR`` and :func:`extract_files`.

Inputs are audio files, folders (searched recursively) and list files. Where each output goes:

- a folder ``in/`` -> ``DIR/<path relative to in/>`` with the suffix replaced
  (``in/a/b.flac`` -> ``DIR/a/b.npy``);
- a file ``x/y.wav`` -> ``DIR/y.npy``;
- a list file, written ``@list.txt`` (any name) or given as a ``.txt`` / ``.lst`` file: one
  input per line, each treated like a command-line input (file or folder); blank lines and lines
  starting with ``#`` are ignored; relative paths are relative to the list file's folder.

Output content (float32, frames first, 100 frames per second, frame ``t`` centred on sample
``160 t``, ``F = ceil(T / 160)`` for ``T`` samples at 16 kHz):

- ``--format npy``: ``--layers final`` -> ``[F, D]``; ``--layers all`` -> ``[L, F, D]``
  (``L = 9`` hidden states for PASE+, in :meth:`Encoder.extract_features` order);
- ``--format safetensors``: ``--layers final`` -> one tensor ``"features"`` ``[F, D]``;
  ``--layers all`` -> ``"layer_0"`` ... ``"layer_{L-1}"``, each ``[F, D]``; the metadata holds
  ``sample_rate``, ``hop`` and ``source``.

``DIR/index.jsonl`` has one JSON line per output: ``input`` (absolute path), ``output``
(relative to ``DIR``), ``frames``, ``seconds`` (duration at 16 kHz), ``dims`` (feature size
``D``), ``shape``, ``layers``, ``format``. It is the truth about the outputs: while a run goes,
each process appends its lines to its own part ``DIR/.index.rank<R>.<host>-<pid>.jsonl`` (one
``write`` per line, after the output's atomic rename) under a shared ``fcntl.flock`` on
``DIR/.index.lock``; at the end the parts are merged into ``index.jsonl`` under the exclusive lock
(atomically, one line per output: ``--overwrite`` replaces an output's line instead of adding
one), so concurrent runs lose no line. The merge drops lines whose output is gone, and a rerun
gives an existing output without a line (a run killed between the two) its line; parts left by a
crashed run, or by a merge that met a full disk, are merged by the next run.

Scale-out: under ``torchrun --nproc_per_node N [--nnodes M] -m pase.cli extract ...`` every
process resolves the same inputs and takes every N-th of them (rank R: items R, R + N, ...), so
each output is written by exactly one process; each uses ``cuda:LOCAL_RANK`` when CUDA is
available, else the CPU. Only rank 0 shows progress and the input problems; each bad file is
reported by the one process that met it; the final summary and the exit code cover all ranks.

Batching. On CUDA (default ``batch_size`` 8) files of similar length are batched, zero-padded
and run with ``lengths=``; the last ~8 frames of a shorter item (the receptive field of the
padding) then differ slightly from its unbatched features. On CPU by default only short files
(up to ``SHORT_SECONDS``) are batched, up to 8 at a time, and only files with the same frame
count ``ceil(T / 160)`` share a batch: the encoder pads every input to a multiple of 160 anyway,
so each output equals ``encoder(wav)`` up to float rounding (tested to 1e-5), while the fixed cost
of a call is shared. Longer files go one by one on CPU, where batching does not help (measured:
1 x 4 s ran ~30 % faster per second of audio than 8 x 4 s). ``batch_size=1`` processes every file
alone, in input order. Files longer than ``long_seconds`` (by their header) always go one by
one, streamed: read in blocks (:func:`pase.audio.read_blocks`), encoded window by window
(:meth:`Encoder.infer_long_blocks`) and, for ``.npy``, written as they are computed
(:class:`NpyWriter`), so memory is set by the window, not the file (``.safetensors`` is written
whole: its writer needs every tensor at once). A file whose decoded length differs from its
header is then read whole instead.

Threads (``--num-threads``, CPU only). The default is 1 thread per process when most files are
short, since small tensors gain little from intra-op threads and lose much when a core is busy
(measured on 2 cores beside a busy process: 0.4 s files at 19 files/s with 1 thread, 2.1 with
torch's default 2); otherwise the available cores divided by the processes on this machine.
To use many cores on many short files, run several processes with ``torchrun``.

Bad inputs (missing, unreadable, empty, non-audio, not a regular file, NaN/Inf samples, a sample
rate below :data:`pase.audio.MIN_SAMPLE_RATE`, shorter than :data:`pase.audio.MIN_SAMPLES`, or
features that are not finite, e.g. from huge samples) are reported in one line each and skipped;
so is an output or index line that cannot be written (a full disk); the rest goes on.

Modules (every public name is importable from ``pase.extract``):

- :mod:`pase.extract.inputs`: command-line inputs -> :class:`Job` s (input file, output path);
- :mod:`pase.extract.core`: :func:`extract_files`, backend and thread choice, batching, encoding;
- :mod:`pase.extract.writers`: the output formats and their writers (:func:`save_features`,
  :class:`NpyWriter`);
- :mod:`pase.extract.index`: ``index.jsonl``, its per-process parts, lock and merge;
- :mod:`pase.extract.cli`: the ``pase extract`` command (``register_cli``).
"""

from pase.extract.cli import check_writable, model_spec, register_cli
from pase.extract.core import (
    AUTO_BATCH,
    AUTO_ONNX_SECONDS,
    BACKENDS,
    BAR_FORMAT,
    DEFAULT_BACKEND,
    LONG_SECONDS,
    SHORT_SECONDS,
    ExtractSummary,
    LengthMismatch,
    auto_num_threads,
    choose_backend,
    encode_batch,
    extract_files,
    extract_streamed,
)
from pase.extract.index import INDEX_NAME, LOCK_NAME, merge_index, merge_reported
from pase.extract.inputs import LIST_SUFFIXES, Job, resolve_inputs
from pase.extract.writers import (
    FORMATS,
    LAYERS,
    FeaturesNotFinite,
    Format,
    Layers,
    NpyWriter,
    check_finite,
    save_features,
)

__all__ = [
    "AUTO_BATCH",
    "AUTO_ONNX_SECONDS",
    "BACKENDS",
    "BAR_FORMAT",
    "DEFAULT_BACKEND",
    "FORMATS",
    "INDEX_NAME",
    "LAYERS",
    "LIST_SUFFIXES",
    "LOCK_NAME",
    "LONG_SECONDS",
    "SHORT_SECONDS",
    "ExtractSummary",
    "FeaturesNotFinite",
    "Format",
    "Job",
    "Layers",
    "LengthMismatch",
    "NpyWriter",
    "auto_num_threads",
    "check_finite",
    "check_writable",
    "choose_backend",
    "encode_batch",
    "extract_files",
    "extract_streamed",
    "merge_index",
    "merge_reported",
    "model_spec",
    "register_cli",
    "resolve_inputs",
    "save_features",
]
