"""torch.hub entry points: ``torch.hub.load(repo_dir, "pase_plus", source="local")``."""

dependencies = ["torch", "numpy", "safetensors"]


def pase_plus(pretrained: bool = True):  # type: ignore[no-untyped-def]
    """PASE+ encoder (256-d every 10 ms); the packaged weights when ``pretrained``."""
    from pase import Encoder

    return Encoder.from_pretrained("pase+") if pretrained else Encoder.from_config("pase+")


def pase(pretrained: bool = False):  # type: ignore[no-untyped-def]
    """PASE (v1) encoder (100-d every 10 ms); no pretrained weights are packaged."""
    from pase import Encoder

    if pretrained:
        raise ValueError("no pretrained PASE (v1) weights are packaged; use pretrained=False or 'pase_plus'")
    return Encoder.from_config("pase")
