"""The encoder in ONNX Runtime: :func:`export_onnx` writes a ``.onnx`` file, :class:`OnnxEncoder` runs it.

    pase export pase+ --onnx encoder.onnx [--layers all]

The graph (torch's dynamo exporter, ``pip install 'pase-speech[onnx]'``) has dynamic batch and
length axes:

- inputs ``wav: [B, T]`` float32 (``T >= MIN_SAMPLES``) and ``lengths: [B]`` int64, the valid
  samples of each row (``T`` for every row of an unpadded batch);
- outputs ``features: [B, F, D]`` and ``feat_lengths: [B]`` (``F = ceil(T / 160)``, frames past an
  item's ``feat_lengths`` zeroed), as ``Encoder(wav, lengths=lengths)``; with ``layers="all"``
  also ``hidden_states: [B, L, F, D]``, as ``Encoder.extract_features`` stacked on axis 1.

``lengths`` is a required input: an ONNX graph has no optional inputs whose default depends on
another input's shape. :class:`OnnxEncoder` fills it in when it is not given.

The QRNN recurrence is exported as one ONNX ``Scan`` over the frames (``torch``'s ``scan``
operator), so the graph is right for every length, not only the traced one; the rest of the
network (reflect padding, the padding to a multiple of 160, the pooled skips) is shape-generic.
LSTM and GRU encoders are not exported. The ``.onnx`` file carries the encoder config and its
``layers`` as metadata, which :class:`OnnxEncoder` reads back.

``pase extract --backend onnxruntime`` exports each model once into a cache
(:func:`cached_export`, ``$PASE_CACHE_DIR/onnx`` or ``~/.cache/pase/onnx``, keyed by a
fingerprint of the weights, config, layers and the code that builds the graph).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pase import caching
from pase.audio import HOP, MIN_SAMPLES, as_waveform, write_atomic
from pase.encoder import Encoder, EncoderConfig
from pase.qrnn import QRNN

Layers = tp.Literal["final", "all"]
#: Bumped when the graph's inputs, outputs or metadata change, so cached exports are redone.
GRAPH_VERSION = "1"
INPUTS = ("wav", "lengths")
OUTPUTS = ("features", "feat_lengths", "hidden_states")
_META_CONFIG = "pase.config"
_META_LAYERS = "pase.layers"
_META_GRAPH = "pase.graph_version"
#: The recurrent layers the graph exports (``EncoderConfig.rnn``); LSTM and GRU do not.
EXPORTABLE_RNNS = ("qrnn", "none")


class OnnxError(ValueError):
    """An ONNX file that cannot be exported or run; the message is one line naming the file."""


def _step(c: torch.Tensor, zf: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    z, f = zf
    c = f * z + (1 - f) * c
    # scan needs the carry and the per-step output to be distinct tensors
    return c, c.clone()


class _ScanQRNN(nn.Module):
    """A :class:`~pase.qrnn.QRNN` whose recurrence is ``torch``'s ``scan`` (ONNX ``Scan``): the
    loop and chunked-scan paths unroll into a fixed number of steps when traced."""

    def __init__(self, qrnn: QRNN) -> None:
        super().__init__()
        self.qrnn = qrnn

    def forward(self, x: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        from torch._higher_order_ops.scan import scan

        z, f, o = self.qrnn.gates(x)
        _, c = scan(_step, torch.zeros_like(z[:, 0]), (z.transpose(0, 1), f.transpose(0, 1)))
        return o * c.transpose(0, 1), None


class _Graph(nn.Module):
    """``(wav: [B, T], lengths: [B])`` -> the outputs of the module docstring."""

    def __init__(self, encoder: Encoder, layers: Layers) -> None:
        super().__init__()
        if encoder.config.rnn not in EXPORTABLE_RNNS:
            raise OnnxError(
                f"ONNX export supports QRNN and recurrence-free encoders, not {encoder.config.rnn}"
            )
        self.encoder = copy.deepcopy(encoder).float().cpu().eval()
        if self.encoder.rnn is not None:
            assert isinstance(self.encoder.rnn.rnn, QRNN)
            self.encoder.rnn.rnn = _ScanQRNN(self.encoder.rnn.rnn)
        self.layers = layers

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # The encoder pads only when T is not a multiple of 160 (a Python branch, fixed when
        # traced); a pad of (-T) mod 160 is the same for every T.
        wav = F.pad(wav, (0, (-wav.shape[-1]) % HOP))
        x, skips = self.encoder._frontend(wav)
        states = skips + self.encoder._top(x, skips)[0]
        flen = Encoder.feat_lengths(lengths)
        keep = (torch.arange(states[-1].shape[-1])[None] < flen[:, None]).to(wav.dtype)
        feats = states[-1].transpose(1, 2) * keep[..., None]
        if self.layers == "final":
            return feats, flen
        hidden = torch.stack([s.transpose(1, 2) for s in states], dim=1) * keep[:, None, :, None]
        return feats, flen, hidden


def export_onnx(encoder: Encoder, path: str | os.PathLike[str], layers: Layers = "final") -> Path:
    """Write ``encoder`` as an ONNX graph to ``path`` (atomically; one file, weights inside).

    ``layers="all"`` adds the ``hidden_states`` output. Needs ``onnx`` and ``onnxscript``
    (``pip install 'pase-speech[onnx]'``). Raises :class:`OnnxError` for an LSTM or GRU encoder.
    """
    if layers not in ("final", "all"):
        raise ValueError(f"layers must be 'final' or 'all', not {layers!r}")
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise OnnxError(f"ONNX export needs {' and '.join(missing)}: {_hint()}")
    graph = _Graph(encoder, layers)
    batch = torch.export.Dim("batch")
    time = torch.export.Dim("time", min=MIN_SAMPLES)
    example = (torch.zeros(2, 16000), torch.tensor([16000, 12345]))
    names = list(OUTPUTS if layers == "all" else OUTPUTS[:2])
    # The exporter's own warnings and log lines (deprecations, axis naming, torchvision operators
    # it skips) are about torch internals, not the model.
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", (FutureWarning, UserWarning, DeprecationWarning))
            program = torch.onnx.export(
                graph,
                example,
                dynamo=True,
                input_names=list(INPUTS),
                output_names=names,
                dynamic_shapes={"wav": {0: batch, 1: time}, "lengths": {0: batch}},
                verbose=False,
            )
    finally:
        log.setLevel(level)
    assert program is not None
    program.model.metadata_props.update(
        {
            _META_CONFIG: json.dumps(encoder.config.to_dict()),
            _META_LAYERS: layers,
            _META_GRAPH: GRAPH_VERSION,
        }
    )
    write_atomic(path, lambda tmp: program.save(tmp, external_data=False))
    return Path(path)


def fingerprint(encoder: Encoder, layers: Layers) -> str:
    """A hash of everything the exported graph depends on: weights, config, ``layers``, the
    versions of torch and this graph, and the source of the modules that build it."""
    import pase.encoder
    import pase.qrnn
    import pase.sincnet

    h = hashlib.sha256()
    for text in (GRAPH_VERSION, torch.__version__, layers, json.dumps(encoder.config.to_dict())):
        h.update(text.encode() + b"\0")
    for source in (pase.encoder.__file__, pase.qrnn.__file__, pase.sincnet.__file__, __file__):
        h.update(Path(source).read_bytes())
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode() + b"\0")
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_export(
    encoder: Encoder, layers: Layers = "final", cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The ONNX export of ``encoder``, written to ``cache_dir`` (default ``cache_dir("onnx")``)
    the first time this model and ``layers`` are asked for, reused afterwards."""
    path = cached_export_path(encoder, layers, cache_dir)
    if not path.is_file():
        export_onnx(encoder, path, layers)
    return path


def _hint() -> str:
    from pase.cli_args import install_hint

    return install_hint("onnx")


def runtime_problem() -> str | None:
    """Why the onnxruntime backend cannot run in this installation (a missing package), or None."""
    missing = [m for m in ("onnxruntime", "onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    return f"{' and '.join(missing)} not installed ({_hint()})" if missing else None


def cached_export_path(
    encoder: Encoder, layers: Layers = "final", cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where :func:`cached_export` keeps (or will keep) the export of ``encoder`` with ``layers``."""
    return Path(cache_dir or caching.cache_dir("onnx")) / f"{fingerprint(encoder, layers)[:24]}-{layers}.onnx"


def _one_line(text: str) -> str:
    return " ".join(text.split())


class OnnxEncoder:
    """An exported encoder in ONNX Runtime, called like :class:`pase.Encoder` (CPU, float32).

    ``OnnxEncoder(path, num_threads=None)``: ``num_threads`` sets ONNX Runtime's intra-op threads
    (None: its default, every core). ``encoder(wav: [B, T]) -> feats: [B, F, D]``; with
    ``lengths: [B]`` -> ``(feats, feat_lengths)``; ``extract_features`` as
    :meth:`pase.Encoder.extract_features` (for files exported with ``layers="all"``). Inputs may be
    tensors or NumPy arrays (any dtype :func:`pase.audio.as_waveform` takes); outputs are tensors.
    A missing, corrupt or foreign file is an :class:`OnnxError`.
    """

    def __init__(self, path: str | os.PathLike[str], num_threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise OnnxError(f"ONNX Runtime is not installed: {_hint()}") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxError(f"{self.path}: no such ONNX file (write one with `pase export SPEC --onnx FILE`)")
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors, many lines long
            raise OnnxError(f"{self.path}: not a loadable ONNX model ({_one_line(str(exc))[:300]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if _META_CONFIG not in meta or _META_LAYERS not in meta:
            raise OnnxError(f"{self.path}: not an ONNX export of a pase encoder (no pase metadata)")
        self.config = EncoderConfig.from_dict(json.loads(meta[_META_CONFIG]))
        self.layers = tp.cast(Layers, meta[_META_LAYERS])

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    @property
    def num_layers(self) -> int:
        """Hidden states :meth:`extract_features` returns (9 for PASE+, 2 for PASE v1)."""
        return (len(self.config.channels) if self.config.dense_skips else 0) + 2

    def _run(self, wav: tp.Any, lengths: tp.Any, outputs: list[str]) -> list[torch.Tensor]:
        x = as_waveform(wav).detach().float().cpu()
        if x.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, T], got shape {tuple(x.shape)}")
        if x.shape[-1] < MIN_SAMPLES:
            raise ValueError(f"input too short: {x.shape[-1]} samples; the encoder needs {MIN_SAMPLES}")
        if lengths is None:
            n = np.full(x.shape[0], x.shape[-1], dtype=np.int64)
        else:
            n = torch.as_tensor(lengths).detach().cpu().numpy().astype(np.int64)
        feeds = {"wav": np.ascontiguousarray(x.numpy()), "lengths": n}
        return [torch.from_numpy(o) for o in self.session.run(outputs, feeds)]

    @tp.overload
    def __call__(self, wav: tp.Any, lengths: None = None) -> torch.Tensor: ...

    @tp.overload
    def __call__(self, wav: tp.Any, lengths: tp.Any) -> tuple[torch.Tensor, torch.Tensor]: ...

    def __call__(
        self, wav: tp.Any, lengths: tp.Any = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``wav: [B, T] -> feats: [B, F, D]``; with ``lengths: [B]`` -> ``(feats, feat_lengths)``."""
        feats, flen = self._run(wav, lengths, ["features", "feat_lengths"])
        return feats if lengths is None else (feats, flen)

    @tp.overload
    def extract_features(self, wav: tp.Any, lengths: None = None) -> list[torch.Tensor]: ...

    @tp.overload
    def extract_features(self, wav: tp.Any, lengths: tp.Any) -> tuple[list[torch.Tensor], torch.Tensor]: ...

    def extract_features(
        self, wav: tp.Any, lengths: tp.Any = None
    ) -> list[torch.Tensor] | tuple[list[torch.Tensor], torch.Tensor]:
        """All hidden states, each ``[B, F, D]``; with ``lengths``, ``(states, feat_lengths)``."""
        if self.layers != "all":
            raise OnnxError(f"{self.path}: exported without hidden states; export it again with --layers all")
        hidden, flen = self._run(wav, lengths, ["hidden_states", "feat_lengths"])
        states = list(hidden.unbind(1))
        return states if lengths is None else (states, flen)


class _OnnxRuntimeEncoder(Encoder):
    """An :class:`Encoder` whose ``forward`` and ``extract_features`` run its ONNX export; the rest
    (``infer_long`` for long files, ``parameters()``) stays in PyTorch. The session is opened on
    first use with ``torch.get_num_threads()`` threads, so ``pase extract --num-threads`` (set
    after the model is loaded) applies to it too."""

    def __init__(self, encoder: Encoder, onnx_path: Path) -> None:
        super().__init__(encoder.config)
        self.load_state_dict(encoder.state_dict())
        self.eval()
        self.onnx_path = onnx_path
        self._runtime: OnnxEncoder | None = None

    def runtime(self) -> OnnxEncoder:
        if self._runtime is None:
            self._runtime = OnnxEncoder(self.onnx_path, num_threads=torch.get_num_threads())
        return self._runtime

    def forward(self, wav: tp.Any, lengths: tp.Any = None) -> tp.Any:
        return self.runtime()(wav, lengths)

    def extract_features(self, wav: tp.Any, lengths: tp.Any = None) -> tp.Any:
        return self.runtime().extract_features(wav, lengths)


def onnxruntime_backend(encoder: Encoder, layers: Layers = "final") -> Encoder:
    """``encoder`` with its batch calls run by ONNX Runtime on its cached export
    (:func:`cached_export`); what ``pase extract --backend onnxruntime`` runs. CPU only."""
    if next(encoder.parameters()).device.type != "cpu":
        raise OnnxError("the onnxruntime backend runs on the CPU; use --device cpu or --backend torch")
    return _OnnxRuntimeEncoder(encoder, cached_export(encoder, layers))
