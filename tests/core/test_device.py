"""--device: one spelling and one default for every command."""

import pytest
import torch

from pipeline.core import defaults
from pipeline.core.device import resolve_device
from pipeline.core.errors import UserError


def test_auto_picks_what_torch_sees():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(defaults.DEVICE) == resolve_device("auto")


def test_cpu_and_spelling_are_normalised():
    assert resolve_device(" CPU ") == "cpu"


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "", "0;rm", "cuda:0:1"])
def test_malformed_device_is_one_clear_error(bad):
    with pytest.raises(UserError, match="is not a device"):
        resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("gpu", ["cuda", "cuda:1", "0", "0,1"])
def test_gpu_on_a_cpu_machine_is_refused_before_any_work(gpu):
    with pytest.raises(UserError, match="no CUDA GPU"):
        resolve_device(gpu)


def test_every_command_shares_the_default():
    """Each command's --device option reads the same default (a stray literal would differ)."""
    import inspect

    from pipeline.commands import detector, encode, evaluate, label, sample

    for module in (detector, encode, evaluate, label, sample):
        for name, fn in vars(module).items():
            own = inspect.isfunction(fn) and fn.__module__ == module.__name__
            if own and "device" in inspect.signature(fn).parameters:
                default = inspect.signature(fn).parameters["device"].default
                assert default == defaults.DEVICE, (module.__name__, name)
