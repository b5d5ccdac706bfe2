"""Device placement on a simulated CUDA device, with no GPU: the commonest GPU-only failure, a
tensor made on the CPU (``torch.zeros(n)`` without ``device=``) meeting the model's CUDA
tensors, fails here on a CPU-only machine, in a training step and in feature extraction.

How (and why not ``FakeTensorMode`` or ``meta``): under ``simulated_cuda()`` a tensor "on cuda"
is a :class:`SimCudaTensor`, a wrapper subclass that reports ``device == cuda:0`` and holds its
REAL values in a CPU tensor. Every op runs on those values, so data-dependent code runs as it
does on a GPU: ``.item()``, ``.tolist()`` (the targets' delta weights), ``nonzero`` (which rows a
distortion fires on), ``int(t.max())`` (speech regions), boolean masks. ``FakeTensorMode`` and the
``meta`` device hold no values, so all of those raise there; a whole step could not run, only
pieces with the data-dependent parts patched out. Two more things stood in their way on this
CPU-only torch build: a fake ``cuda`` tensor that requires grad aborts the process when autograd
records it (no CUDA device guard is compiled in), and ``torch.zeros(device="cuda")`` initialises
CUDA (and fails) before a dispatch mode sees it (``FakeTensorMode`` alone is exempted). So:

* a ``TorchFunctionMode`` (:class:`_CudaArguments`) rewrites every ``device="cuda"`` (factories,
  ``.to``, ``.cuda()``, ``torch.tensor``) to ``meta``, which torch accepts without CUDA, checks
  that a ``generator=`` is on the op's device (a CPU generator feeding a CUDA op fails on a GPU),
  and makes ``.numpy()`` of a CUDA tensor fail as it does on a GPU;
* a ``TorchDispatchMode`` (:class:`_SimulatedCuda`) sees every aten op: it raises torch's
  "Expected all tensors to be on the same device" when a CPU tensor meets a CUDA one, otherwise
  runs the op on the CPU values and wraps the results whose device is cuda (a ``meta`` device
  argument means cuda). The wrapper's C++ device is ``meta``, so autograd runs as on the CPU.

The device rules are torch's (and FakeTensor's): CPU tensors with 0 dimensions mix with CUDA ones
(Adam's step counter, ``x[cpu_scalar]``), CPU index tensors may index a CUDA tensor (``x[idx]``,
``index_put_``), ``copy_`` and ``.to`` move between devices; any other CPU tensor of 1 or more
dimensions beside a CUDA one raises. ``torch.Generator(device="cuda")`` gives a CPU generator that
reports cuda (:class:`SimCudaGenerator`).

Covered: (a) ``Trainer`` built with ``device="cuda"`` (its model and distorter moved with
``.to``, target statistics fitted on the device), then ``train_step``: all 8 distortions firing
on every row (codec2 only when pycodec2 is installed: its round trip is a CPU detour), every
PASE+ target and worker, the discriminators' bilinear/cosine heads with batch negatives, the
total loss, backward, gradient clipping and Adam; then ``validate()`` (the workers' metrics).
PASE v1's workers (SPC, the v1 targets) with ``rand`` taken from the batch run on a
``PaseModel``. ``Trainer.run()`` for 2 steps (prefetch, logs, validation, checkpoints, export)
and a resumed run (model, Adam state and generator restored onto the device). (b) the encoder on
a padded batch with ``lengths`` (QRNN scan and loop, LSTM, no RNN), ``extract_features``,
``infer_long`` / ``infer_long_blocks``, ``encoder.stream()``, ``pase.extract.encode_batch`` /
``extract_files`` and ``FeatureLoss``, each compared with the same encoder on the CPU.
:func:`test_planted_device_bug_is_caught` shows the check failing on a ``torch.zeros(n)``
planted in a target and in a distortion, code that runs fine on the CPU.

Simulated, so not tested: pinned memory (``pin_memory()`` copies) and checkpoint files (a CUDA
tensor is pickled as its CPU values, as ``torch.load(map_location="cpu")`` reads it back).
Not covered: bf16 autocast (``torch.autocast("cuda")`` disables itself without CUDA, so steps run
in float32: a dtype question, not a device one), DDP, and CUDA-only kernel limits (memory,
dtypes). The modes are per thread: the prefetch thread (which only reads and pins) runs outside.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import perturbed_encoder, synth_speechlike, write_train_corpus
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from pase import distortions, targets
from pase.distributed import Ranks
from pase.encoder import Encoder, EncoderConfig
from pase.train import TrainConfig, Trainer
from pase.workers import PaseModel

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")
#: How "cuda" travels from the function mode to the dispatch mode (see the module docstring).
_STAND_IN = torch.device("meta")
TINY_ENCODER: dict[str, tp.Any] = {
    "channels": [8, 8, 8, 16, 16, 16, 16],
    "rnn_hidden": 16,
    "embedding_dim": 16,
}
DEVICE_ERROR = "Expected all tensors to be on the same device"
aten = torch.ops.aten


# --------------------------------------------------------------------------------------------
# the simulated CUDA device
# --------------------------------------------------------------------------------------------
class SimCudaTensor(torch.Tensor):
    """A tensor "on cuda:0" whose values live in the CPU tensor ``values_``."""

    values_: torch.Tensor
    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    @staticmethod
    def __new__(cls, inner: torch.Tensor) -> SimCudaTensor:
        if type(inner) is not torch.Tensor or inner.device.type != "cpu":
            raise TypeError(f"SimCudaTensor wraps a plain CPU tensor, got {type(inner).__name__}")
        outer = torch.Tensor._make_wrapper_subclass(
            cls,
            inner.shape,
            strides=inner.stride(),
            storage_offset=inner.storage_offset(),
            dtype=inner.dtype,
            layout=inner.layout,
            device=_STAND_IN,
            requires_grad=inner.requires_grad,
        )
        outer.values_ = inner
        return tp.cast(SimCudaTensor, outer)

    # What Python code sees; the C++ side sees the stand-in.
    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return CUDA

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True

    @property
    def is_meta(self) -> bool:  # type: ignore[override]
        return False

    def get_device(self) -> int:
        return 0

    def __repr__(self, *, tensor_contents: object = None) -> str:  # type: ignore[override]
        return f"{self.values_!r} (simulated on cuda:0)"

    def __reduce_ex__(self, protocol: tp.SupportsIndex) -> tp.Any:
        # torch.save: pickled as its CPU values, as torch.load(map_location="cpu") reads a CUDA tensor
        return self.values_.clone().__reduce_ex__(protocol)

    # A traceable wrapper: Module.to/_apply then swaps parameters in place (optimizers keep them).
    def __tensor_flatten__(self) -> tuple[list[str], None]:
        return ["values_"], None

    @staticmethod
    def __tensor_unflatten__(
        inner_tensors: dict[str, torch.Tensor], meta: None, outer_size: object, outer_stride: object
    ) -> SimCudaTensor:
        return SimCudaTensor(inner_tensors["values_"])

    @classmethod
    def __torch_dispatch__(  # type: ignore[override]
        cls, func: tp.Any, types: tp.Any, args: tp.Any = (), kwargs: tp.Any = None
    ) -> tp.Any:  # outside simulated_cuda() (e.g. a test's checks afterwards): the same rules
        return _run_op(func, args, kwargs or {})


class SimCudaGenerator(torch.Generator):
    """``torch.Generator(device="cuda")``: a CPU generator that reports its device as cuda."""

    simulated: bool

    def __new__(cls, device: str | torch.device = "cpu") -> SimCudaGenerator:
        gen = super().__new__(cls, device="cpu")  # type: ignore[call-arg]
        gen.simulated = torch.device(device).type == "cuda"
        return gen

    def __init__(self, device: str | torch.device = "cpu") -> None:
        pass

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return CUDA if self.simulated else CPU


def _names_cuda(x: object) -> bool:
    if isinstance(x, torch.Tensor):
        return x.device.type == "cuda"
    if isinstance(x, (str, torch.device)):
        with contextlib.suppress(RuntimeError):
            return torch.device(x).type == "cuda"
    return False


def _stand_in(x: object) -> object:
    """A device argument (or the tensor of ``.to(other)``) with cuda replaced by the stand-in."""
    if isinstance(x, torch.Tensor):
        return torch.empty(0, dtype=x.dtype, device=_STAND_IN) if _names_cuda(x) else x
    return _STAND_IN if _names_cuda(x) else x


def _any_sim(tree: object) -> bool:
    return any(isinstance(t, SimCudaTensor) for t in tree_flatten(tree)[0])


_DATA_CONSTRUCTORS = {torch.tensor, torch.as_tensor, torch.asarray, torch.Tensor.new_tensor}


class _CudaArguments(TorchFunctionMode):
    """Python-level calls: "cuda" becomes the stand-in device; generator and numpy rules."""

    def __torch_function__(
        self, func: tp.Any, types: tp.Any, args: tp.Any = (), kwargs: tp.Any = None
    ) -> tp.Any:
        kwargs = dict(kwargs or {})
        if func in (torch.Tensor.numpy, torch.Tensor.__array__) and isinstance(args[0], SimCudaTensor):
            raise TypeError(
                "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                "to host memory first."
            )
        if func is torch.Tensor.tolist and isinstance(args[0], SimCudaTensor):
            return args[0].values_.tolist()
        generator = kwargs.get("generator")
        if generator is not None:
            device = kwargs.get("device")
            op = "cuda" if (_names_cuda(device) if device is not None else _any_sim(args)) else "cpu"
            if generator.device.type != op:
                raise RuntimeError(
                    f"Expected a '{op}' device type for generator but found '{generator.device.type}'"
                )
        if func in _DATA_CONSTRUCTORS:
            # torch.tensor(data, device=d) copies to d below the modes: build on the CPU, then move.
            device = kwargs.get("device")
            if device is None and func is torch.Tensor.new_tensor:
                device = args[0].device
            if _names_cuda(device):
                kwargs["device"] = CPU
                if func is torch.Tensor.new_tensor and isinstance(args[0], SimCudaTensor):
                    args = (args[0].values_, *args[1:])
                return func(*args, **kwargs).to(_STAND_IN)
            return func(*args, **kwargs)
        if func is torch.Tensor.cuda:
            return args[0].to(_STAND_IN, non_blocking=kwargs.get("non_blocking", False))
        if func is torch.Tensor.to:
            args = (args[0], *map(_stand_in, args[1:]))
        if "device" in kwargs:
            kwargs["device"] = _stand_in(kwargs["device"])
        return func(*args, **kwargs)


#: Ops that move data between devices.
_TRANSFERS = {aten._to_copy.default, aten.copy_.default, aten.copy.default, aten._copy_from.default}
#: Ops whose CPU index tensors may index a CUDA tensor.
_INDEXING = {
    aten.index.Tensor,
    aten.index_put_.default,
    aten.index_put.default,
    aten._index_put_impl_.default,
}


def _device_name(t: torch.Tensor) -> str:
    return "cuda:0" if isinstance(t, SimCudaTensor) else str(t.device)


def _check_devices(func: tp.Any, args: tp.Sequence[tp.Any], kwargs: dict[str, tp.Any]) -> None:
    """Torch's device check: raise where a CUDA kernel would."""
    if func in _TRANSFERS:
        return
    operands: list[tp.Any] = (
        list(args[:1]) + list(args[2:3]) if func in _INDEXING else tree_flatten((args, kwargs))[0]
    )
    devices = set()
    for t in operands:
        if not isinstance(t, torch.Tensor):
            continue
        if not isinstance(t, SimCudaTensor) and t.device.type == _STAND_IN.type:
            raise AssertionError(f"{func}: a real meta tensor, made by a constructor the simulation missed")
        if isinstance(t, SimCudaTensor) or t.dim() > 0:
            devices.add(_device_name(t))
    if func in _INDEXING and not isinstance(args[0], SimCudaTensor) and _any_sim(args[1]):
        devices.add("cuda:0")  # CUDA indices into a CPU tensor
    if len(devices) > 1:
        raise RuntimeError(
            f"{DEVICE_ERROR}, but found at least two devices, {' and '.join(sorted(devices))}! "
            f"(simulated CUDA, in {func})"
        )


def _run_op(func: tp.Any, args: tp.Any, kwargs: dict[str, tp.Any]) -> tp.Any:
    _check_devices(func, args, kwargs)
    device = kwargs.get("device")
    if device is not None:  # a factory or a copy names its device: the stand-in means cuda
        on_cuda = torch.device(device).type == _STAND_IN.type
        kwargs = {**kwargs, "device": CPU}
    else:
        on_cuda = _any_sim((args, kwargs))
    originals: dict[int, torch.Tensor] = {}

    def unwrap(t: tp.Any) -> tp.Any:
        if not isinstance(t, torch.Tensor):
            return t
        inner = t.values_ if isinstance(t, SimCudaTensor) else t
        originals[id(inner)] = t
        return inner

    out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))

    def wrap(t: tp.Any) -> tp.Any:
        if not isinstance(t, torch.Tensor) or isinstance(t, SimCudaTensor):
            return t
        original = originals.get(id(t))
        if original is not None:
            # in-place ops, and conversions with nothing to convert, return their argument
            if device is None or isinstance(original, SimCudaTensor) == on_cuda:
                return original
            t = t.clone()  # a conversion to the other device copies
        return SimCudaTensor(t) if on_cuda else t

    return tree_map(wrap, out)


class _SimulatedCuda(TorchDispatchMode):
    def __torch_dispatch__(
        self, func: tp.Any, types: tp.Any, args: tp.Any = (), kwargs: tp.Any = None
    ) -> tp.Any:
        return _run_op(func, args, kwargs or {})


def _clear_device_caches() -> None:
    """pase.targets caches windows and filterbanks per device: no simulated one outlives a test."""
    for name in dir(targets):
        cached = getattr(targets, name)
        if isinstance(cached, functools._lru_cache_wrapper):
            cached.cache_clear()


@contextlib.contextmanager
def simulated_cuda() -> tp.Iterator[None]:
    """Run the block as if a CUDA GPU were there (see the module docstring)."""
    rng_states: dict[int, torch.Tensor] = {}

    def get_rng_state(device: object = "cuda") -> torch.Tensor:
        return rng_states.get(0, torch.get_rng_state())

    def set_rng_state(state: torch.Tensor, device: object = "cuda") -> None:
        rng_states[0] = state

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        # without a GPU torch.autocast("cuda") warns and disables itself: the step runs in float32
        warnings.filterwarnings("ignore", message=".*Disabling autocast", category=UserWarning)
        # an LSTM "on cuda" asks for cuDNN, which a CPU build lacks
        warnings.filterwarnings("ignore", message=".*compiled without cuDNN", category=UserWarning)
        mp.setattr(torch, "Generator", SimCudaGenerator)
        # Trainer.run pins its batches in a reader thread (outside the modes, which are per thread)
        mp.setattr(torch.Tensor, "pin_memory", lambda self, device=None: self.clone())
        # Trainer.validate forks the CUDA random state; the real functions would initialise CUDA
        mp.setattr(torch.cuda, "get_rng_state", get_rng_state)
        mp.setattr(torch.cuda, "set_rng_state", set_rng_state)
        # the trainer's own check refuses --device cuda where torch.cuda.is_available() is False
        mp.setattr("pase.train.loop._join", lambda device: Ranks.from_env().on(device))
        try:
            with _CudaArguments(), _SimulatedCuda():
                yield
        finally:
            _clear_device_caches()


def on_cuda(*tensors: torch.Tensor) -> bool:
    return all(isinstance(t, SimCudaTensor) and t.device == CUDA for t in tensors)


def cpu(x: torch.Tensor) -> torch.Tensor:
    return x.values_.clone() if isinstance(x, SimCudaTensor) else x


# --------------------------------------------------------------------------------------------
# the simulation itself
# --------------------------------------------------------------------------------------------
def test_simulated_cuda_follows_torch_device_rules() -> None:
    with simulated_cuda():
        x = torch.arange(4.0).to("cuda")
        assert on_cuda(x, x + 1, torch.zeros(3, device="cuda"), torch.tensor([1.0], device=x.device))
        assert on_cuda(torch.ones(2).cuda(), x.new_zeros(2), x.new_tensor([1, 2]), torch.zeros_like(x))
        assert x.cpu().device == CPU and type(x.cpu()) is torch.Tensor
        assert (x * 2).tolist() == [0.0, 2.0, 4.0, 6.0] and (x.sum() == 6).item()
        # what a GPU allows: CPU 0-dim tensors (scalars) and CPU indices, copies between devices
        assert on_cuda(x + torch.tensor(1.0), x[torch.tensor([0, 2])], x[x > 1])
        y = torch.zeros(4)
        y.copy_(x)
        assert y.tolist() == [0.0, 1.0, 2.0, 3.0]
        # what it refuses
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            x + torch.zeros(4)
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            torch.cat([x, torch.zeros(1)])
        with pytest.raises(RuntimeError, match=DEVICE_ERROR):
            x.gather(0, torch.tensor([0, 1]))
        with pytest.raises(RuntimeError, match="device type for generator"):
            torch.rand(3, generator=torch.Generator(), device=x.device)
        with pytest.raises(TypeError, match="cpu()"):
            x.numpy()
        gen = torch.Generator(device="cuda")
        assert on_cuda(torch.rand(3, generator=gen.manual_seed(0), device=gen.device))
        # autograd and modules: parameters, gradients and the optimizer state stay on the device
        layer = torch.nn.Linear(4, 2).to("cuda")
        opt = torch.optim.Adam(layer.parameters())
        layer(x[None]).square().sum().backward()
        opt.step()
        assert isinstance(layer.weight, torch.nn.Parameter)
        assert on_cuda(
            layer.weight, tp.cast(torch.Tensor, layer.weight.grad), opt.state[layer.weight]["exp_avg"]
        )


# --------------------------------------------------------------------------------------------
# (a) training
# --------------------------------------------------------------------------------------------
ALL_DISTORTIONS = {f"{name}_p": 1.0 for name in distortions.DISTORTIONS if name != "codec2"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 speakers x 2 files of 1 s speech-like audio, and one synthetic room response."""
    return write_train_corpus(tmp_path_factory.mktemp("device_corpus"), speakers=4, seconds=1.0)


def tiny_config(corpus: Path, **overrides: tp.Any) -> TrainConfig:
    """PASE+ on a tiny encoder and 0.2 s chunks, on ``device="cuda"``."""
    return TrainConfig.pase_plus().updated(
        {
            "device": "cuda",
            "encoder": TINY_ENCODER,
            "data": [str(corpus / "audio")],
            "cache_dir": str(corpus / "cache"),
            "min_seconds": 0.2,
            "valid_fraction": 0.25,
            "batch_size": 2,
            "chunk_size": 3200,
            "max_steps": 2,
            "stats_batches": 1,
            "valid_batches": 1,
            "num_threads": 1,
            "num_workers": 0,
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def cuda_trainer(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    """Every PASE+ worker plus the other discriminator forms, every distortion always on."""
    config = tiny_config(
        corpus,
        grad_clip=1.0,
        distortions={
            "n_sim_rooms": 0,
            "rir_dir": str(corpus / "rir"),
            **ALL_DISTORTIONS,
            "codec2": distortions.codec2_available(),
            "codec2_p": 1.0,
        },
        extra_workers=[
            {"name": "lim_bilinear", "kind": "lim", "head": "bilinear", "negatives": "batch", "pool": 4},
            {"name": "gim_cosine", "kind": "gim", "head": "cosine", "negatives": "batch"},
        ],
    )
    threads = torch.get_num_threads()
    try:
        with simulated_cuda():
            return Trainer(config, tmp_path_factory.mktemp("device_run") / "run", progress=False)
    finally:
        torch.set_num_threads(threads)


def test_training_step_on_cuda(cuda_trainer: Trainer, one_thread: None) -> None:
    trainer = cuda_trainer
    model = trainer.model
    assert trainer.info.device.type == "cuda"
    assert on_cuda(*model.parameters(), *model.buffers(), *trainer.distorter.buffers())
    assert model.has_target_stats  # fitted on the device in __init__
    batch = trainer.batches.batch(0, 0)  # CPU, as the data loader gives it
    with simulated_cuda():
        total, losses, grad_norm = trainer.train_step(batch)
        assert on_cuda(total, grad_norm, *losses.values())
        assert len(losses) == 14 and all(np.isfinite(float(v.detach())) for v in losses.values())
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None for g in grads) and on_cuda(*tp.cast(list[torch.Tensor], grads))
        state = trainer.optimizer.state[next(model.parameters())]
        assert on_cuda(state["exp_avg"], state["exp_avg_sq"])
        assert on_cuda(*model.buffers())
        scores = trainer.validate()
    assert np.isfinite(scores["loss"]) and 0.0 <= scores["lim_acc"] <= 1.0


def test_pase_v1_workers_and_rand_from_batch_on_cuda(one_thread: None) -> None:
    """SPC and the PASE v1 targets (not in the PASE+ step), with ``rand=None``: the negatives
    are the batch's own contexts."""
    model = PaseModel.from_preset("pase", EncoderConfig.from_dict({**TINY_ENCODER, "rnn": "none"}))
    # SPC needs chunks of 43 frames or more: 0.44 s
    wav = torch.from_numpy(np.stack([synth_speechlike(0.44, seed=s) for s in range(4)]))
    with simulated_cuda():
        model.to("cuda")
        chunks = wav.to("cuda")
        model.fit_target_stats([chunks])
        losses = model(chunks[:2], chunks[:2], chunks[2:], None)
        assert set(losses) == {w.name for w in model.worker_configs} and on_cuda(*losses.values())
        model.total_loss(losses).backward()
        assert on_cuda(*[tp.cast(torch.Tensor, p.grad) for p in model.parameters()])


def test_run_checkpoint_and_resume_on_cuda(corpus: Path, tmp_path: Path, one_thread: None) -> None:
    """``Trainer.run``: prefetch, logs, validation, checkpoints and the export, then a resumed run
    (model, Adam state and the distortions' generator restored onto the device)."""
    config = tiny_config(
        corpus,
        valid_every=2,
        ckpt_every=1,
        workers=[{"name": "mfcc"}, {"name": "lim", "kind": "lim"}],
        distortions={"n_sim_rooms": 0, "rir_dir": str(corpus / "rir"), "reverb_p": 1.0, "noise_p": 1.0},
    )
    out = tmp_path / "run"
    with simulated_cuda():
        assert Trainer(config, out, progress=False).run() == 0
        resumed = Trainer(config.updated({"max_steps": 3}), out, resume=True, progress=False)
        assert resumed.step == 2
        model = resumed.model
        assert on_cuda(*model.parameters(), *model.buffers())
        states = [s for p in model.parameters() for k, s in resumed.optimizer.state[p].items() if k != "step"]
        assert states and on_cuda(*states)
        assert resumed.run() == 0
    assert (out / "valid.csv").read_text().count("\n") == 3  # header, steps 2 and 3
    assert Encoder.from_pretrained(out / "encoder").embedding_dim == TINY_ENCODER["embedding_dim"]


@pytest.mark.parametrize("where", ["target", "distortion"])
def test_planted_device_bug_is_caught(
    where: str, cuda_trainer: Trainer, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """A ``torch.zeros(n)`` without ``device=`` added to a target (or to a distortion's output):
    harmless on the CPU, a device error on a GPU, and so here."""
    if where == "target":
        real = targets.TARGETS["mfcc"]

        def planted_mfcc(wav: torch.Tensor) -> torch.Tensor:
            out = real.fn(wav)
            return out + torch.zeros(out.shape[-1])  # the bug: no device=

        monkeypatch.setitem(targets.TARGETS, "mfcc", targets.Target("mfcc", real.dim, planted_mfcc))
        planted: tp.Callable[[torch.Tensor], torch.Tensor] = planted_mfcc
    else:
        real_clip = distortions.clip

        def planted_clip(wav: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
            return real_clip(wav, level) + torch.zeros(wav.shape[-1])  # the bug: no device=

        monkeypatch.setattr(distortions, "clip", planted_clip)
        planted = functools.partial(planted_clip, level=torch.full((2,), 0.5))
    wav = torch.from_numpy(np.stack([synth_speechlike(0.2, seed=s) for s in range(2)]))
    assert torch.isfinite(planted(wav)).all()  # fine on the CPU
    with simulated_cuda(), pytest.raises(RuntimeError, match=DEVICE_ERROR) as caught:
        cuda_trainer.train_step(cuda_trainer.batches.batch(0, 1))
    assert any(entry.name.startswith("planted_") for entry in caught.traceback)  # raised there


# --------------------------------------------------------------------------------------------
# (b) feature extraction
# --------------------------------------------------------------------------------------------
ENCODERS = {
    "qrnn-scan": TINY_ENCODER,
    "qrnn-loop": {**TINY_ENCODER, "qrnn_impl": "loop"},
    "lstm": {**TINY_ENCODER, "rnn": "lstm"},
    "none": {**TINY_ENCODER, "rnn": "none", "dense_skips": False},
}


def cpu_and_cuda(config: dict[str, tp.Any]) -> tuple[Encoder, Encoder]:
    """The same eval-mode encoder on the CPU and (under ``simulated_cuda()``) on cuda."""
    encoder = perturbed_encoder(EncoderConfig.from_dict(config), seed=0)
    on_device = copy.deepcopy(encoder)
    with simulated_cuda():
        on_device.to("cuda")
    return encoder, on_device


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert on_cuda(got)
    torch.testing.assert_close(cpu(got), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rnn", list(ENCODERS))
def test_encoder_on_padded_batch_with_lengths(rnn: str, one_thread: None) -> None:
    encoder, cuda_encoder = cpu_and_cuda(ENCODERS[rnn])
    # lengths that are not multiples of the hop, so the end padding paths run too
    wavs = [synth_speechlike(0.5, seed=i)[:n] for i, n in enumerate((8000, 5301, 3377))]
    batch = torch.zeros(3, len(wavs[0]))
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = torch.from_numpy(w)
    lengths = torch.tensor([len(w) for w in wavs])
    want, want_frames = encoder(batch, lengths)
    want_states, _ = encoder.extract_features(batch, lengths)
    with simulated_cuda():
        # lengths from the CPU (the usual call) or from the device
        for lens in (lengths, lengths.to("cuda")):
            feats, frames = cuda_encoder(batch.to("cuda"), lens)
            close(feats, want)
            assert cpu(frames).tolist() == want_frames.tolist()
        states, _ = cuda_encoder.extract_features(batch.to("cuda"), lengths)
        for got, ref in zip(states, want_states, strict=True):
            close(got, ref)
        close(cuda_encoder(wavs[1][None]), encoder(torch.from_numpy(wavs[1])[None]))  # NumPy in: moved


def test_long_file_and_stream_on_cuda(one_thread: None) -> None:
    encoder, cuda_encoder = cpu_and_cuda(TINY_ENCODER)
    # NumPy, as pase.load_audio gives it (infer_long moves it to the device); not a multiple of the hop
    wav: tp.Any = synth_speechlike(1.3, seed=3)[:20763]
    want = encoder.infer_long(wav, window_seconds=0.25)
    want_all = encoder.infer_long(wav, layers="all", window_seconds=0.25)
    blocks = np.array_split(wav, [1000, 1500, 9000])
    with simulated_cuda():
        close(cuda_encoder.infer_long(wav, window_seconds=0.25), want)
        close(cuda_encoder.infer_long(torch.from_numpy(wav).to("cuda"), window_seconds=0.25), want)
        # a tensor read on the host: windows are moved to the encoder's device one by one
        close(cuda_encoder.infer_long(torch.from_numpy(wav), window_seconds=0.25), want)
        close(cuda_encoder.infer_long(wav, layers="all", window_seconds=0.25), want_all)
        pieces = list(cuda_encoder.infer_long_blocks(iter(blocks), window_seconds=0.25))
        assert len(pieces) > 2
        close(torch.cat(pieces), want)
        for layers, ref in (("final", want), ("all", want_all)):
            stream = cuda_encoder.stream(layers)  # type: ignore[arg-type]
            parts = [stream.push(b) for b in blocks[:-2]]
            parts += [stream.push(torch.from_numpy(blocks[-2]))]  # a host tensor is moved over
            parts += [stream.push(torch.from_numpy(blocks[-1]).to("cuda")), stream.flush()]
            close(torch.cat(parts, dim=-2), ref)


def test_extract_and_feature_loss_on_cuda(tmp_path: Path, one_thread: None) -> None:
    from pase import FeatureLoss
    from pase.extract import encode_batch, extract_files

    encoder, cuda_encoder = cpu_and_cuda(TINY_ENCODER)
    wavs = [synth_speechlike(1.2, seed=i)[:n] for i, n in enumerate((6401, 4000, 19213))]
    (tmp_path / "in").mkdir()
    for i, w in enumerate(wavs):
        sf.write(tmp_path / "in" / f"{i}.wav", w, 16000, subtype="FLOAT")
    estimate = torch.from_numpy(np.stack([wavs[0][:4000], wavs[1][:4000]]))
    reference = torch.from_numpy(np.stack([wavs[1][:4000], wavs[0][:4000]]))
    with simulated_cuda():
        # the padded batch and, for the file over long_seconds, infer_long
        got = encode_batch(cuda_encoder, wavs, long_seconds=1.0, window_seconds=0.25)
        summary = extract_files(
            [tmp_path / "in"], tmp_path / "out", cuda_encoder, long_seconds=1.0, window_seconds=0.25
        )
        # a differentiable loss through the frozen encoder, lengths from the CPU
        loss_fn = FeatureLoss(cuda_encoder, layers={0: 0.5, -1: 1.0})
        est = estimate.to("cuda").requires_grad_()
        loss = loss_fn(est, reference.to("cuda"), lengths=torch.tensor([4000, 3000]))
        loss.backward()
        assert on_cuda(loss, tp.cast(torch.Tensor, est.grad))
    want = encode_batch(encoder, wavs, long_seconds=1.0, window_seconds=0.25)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert summary.ok and summary.extracted == 3
    assert np.load(tmp_path / "out" / "2.npy").shape == want[2].shape
    want_loss = FeatureLoss(encoder, layers={0: 0.5, -1: 1.0})(
        estimate, reference, lengths=torch.tensor([4000, 3000])
    )
    torch.testing.assert_close(cpu(loss).detach(), want_loss.detach(), rtol=1e-4, atol=1e-6)
