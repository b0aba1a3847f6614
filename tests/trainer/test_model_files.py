"""Model files and checkpoints are untrusted input: refused in one line, never executed.

A run folder or a model folder is shared, copied and cut short like any dataset. Each
test here feeds one kind of damaged or hostile file and checks the user gets one
``groundset: error:`` line (exit 2) and nothing else happens: no code from a pickle,
no training from step 0, no hub lookup for a folder that is not there, no NaN images.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline import cli
from pipeline.core.errors import UserError
from pipeline.core.outputs import make_output_dir
from tests.train_fixtures import make_dataset
from trainer.checkpoint import CHECKPOINT, read_checkpoint, restore_checkpoint, save_checkpoint
from trainer.model import adapter_state_dict, load_adapters, load_components, save_adapters
from trainer.model_files import resolve_model
from trainer.train import KIND, TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["groundset", "-q", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    return e.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("files") / "data")


def train_args(model, data, out, *extra):
    return ["train", "--model", model, "--data", data, "--out", out, "--steps", "1", *extra]


# --------------------------------------------------------------------------- checkpoints


class Payload:
    """Unpickling this writes ``marker``: what a crafted checkpoint would do with a shell."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def write_crafted(path: Path, how: str, marker: Path) -> None:
    state = {"step": 1, "config": {}, "trainable": {}, "optimizer": {}, "scaler": Payload(marker)}
    if how == "raw-pickle":
        path.write_bytes(pickle.dumps(state))
    else:  # torch's own zip format, the payload hidden in a real-looking state
        torch.save(state, path)


@pytest.mark.parametrize("how", ["torch-zip", "raw-pickle"])
def test_crafted_pickle_checkpoint_is_refused_and_never_runs(
    how, tiny_model, data, tmp_path, monkeypatch, capsys
):
    run, marker = make_output_dir(tmp_path / "run", KIND), tmp_path / "pwned"  # a shared run
    write_crafted(run / CHECKPOINT, how, marker)
    # the payload is live: a plain unpickler runs it (so this test can fail)
    with (run / CHECKPOINT).open("rb") as f:
        (torch.load(f, weights_only=False) if how == "torch-zip" else pickle.load(f))
    assert marker.read_text() == "pwned"
    marker.unlink()

    code, err = run_cli(monkeypatch, capsys, *train_args(tiny_model, data, run, "--resume"))
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("groundset: error: refusing to load") and CHECKPOINT in err[0]
    assert not marker.exists()
    if how == "torch-zip":
        assert "exec" in err[0]  # says what the file asked to run


def test_resume_without_a_checkpoint_is_an_error(tiny_model, data, tmp_path, monkeypatch, capsys):
    make_output_dir(tmp_path / "killed-early", KIND)  # a run killed before its first checkpoint
    for out in (tmp_path / "new", tmp_path / "killed-early"):
        code, err = run_cli(monkeypatch, capsys, *train_args(tiny_model, data, out, "--resume"))
        assert code == 2 and len(err) == 1, err
        assert "--resume" in err[0] and f"no {CHECKPOINT}" in err[0]
        assert not (out / "dvclive").exists() and not (out / CHECKPOINT).exists()


def small_run(seed=0, width=3):
    """A module, its AdamW after one step and an enabled GradScaler: what a checkpoint holds."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(width, 2), torch.nn.Linear(2, 1))
    net[1].requires_grad_(False)  # frozen weights are not checkpointed
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    net(torch.randn(4, width)).sum().backward()
    opt.step()
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.ones(()))  # makes its scale tensor, as the first fp16 step does
    scaler.update(1024.0 * (seed + 1))
    return net, opt, scaler


def test_checkpoint_holds_only_plain_values_and_restores_exactly(tmp_path):
    cfg = TrainConfig(model="m", data="d", out=str(tmp_path))
    net, opt, scaler = small_run()
    save_checkpoint(tmp_path / CHECKPOINT, net, opt, scaler, 7, cfg)
    torch.load(tmp_path / CHECKPOINT, weights_only=True)  # AdamW + GradScaler state load this way
    state = read_checkpoint(tmp_path / CHECKPOINT, cfg)
    net2, opt2, scaler2 = small_run(seed=1)
    assert restore_checkpoint(state, tmp_path / CHECKPOINT, net2, opt2, scaler2) == 7
    for a, b in zip(net.parameters(), net2.parameters()):
        if a.requires_grad:
            assert torch.equal(a, b)
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(v, opt2.state_dict()["state"][0][k])
    assert scaler2.state_dict() == scaler.state_dict()


def _real_checkpoint(path: Path) -> TrainConfig:
    cfg = TrainConfig(model="m", data="d", out=str(path.parent))
    save_checkpoint(path, *small_run(), 3, cfg)
    return cfg


BROKEN = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(os.urandom(4096)),
    "text": lambda p: p.write_text("hello"),
    "a list": lambda p: torch.save([1, 2, 3], p),
    "missing keys": lambda p: torch.save({"step": 1, "config": {}}, p),
    "step not an int": lambda p: torch.save(
        {**torch.load(p, weights_only=True), "step": "seven"}, p
    ),
    "a folder": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.mark.parametrize("damage", list(BROKEN))
def test_broken_checkpoint_is_one_line(damage, tmp_path):
    path = tmp_path / CHECKPOINT
    cfg = _real_checkpoint(path)
    BROKEN[damage](path)
    with pytest.raises(UserError) as e:
        read_checkpoint(path, cfg)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_broken_checkpoint_via_cli_is_one_line(tiny_model, data, tmp_path, monkeypatch, capsys):
    run = make_output_dir(tmp_path / "run", KIND)
    _real_checkpoint(run / CHECKPOINT)
    BROKEN["truncated"](run / CHECKPOINT)
    code, err = run_cli(monkeypatch, capsys, *train_args(tiny_model, data, run, "--resume"))
    assert code == 2 and len(err) == 1 and "truncated" in err[0], err


def test_checkpoint_for_another_model_or_with_nan_is_refused(tmp_path):
    path = tmp_path / CHECKPOINT
    cfg = _real_checkpoint(path)
    state = read_checkpoint(path, cfg)
    with pytest.raises(UserError, match="does not fit"):
        restore_checkpoint(state, path, *small_run(width=5))
    net, opt, scaler = small_run()
    state["trainable"]["0.weight"][0, 0] = float("nan")
    with pytest.raises(UserError, match="NaN"):
        restore_checkpoint(state, path, net, opt, scaler)
    other = TrainConfig(model="m", data="d", out=str(tmp_path), seed=5)
    with pytest.raises(UserError, match="seed"):
        read_checkpoint(path, other)


# --------------------------------------------------------------------------- model folders


def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _empty(d: Path) -> None:
    shutil.rmtree(d)
    d.mkdir()


DAMAGE = {  # what is done to a copy of the tiny latent model -> a word the error must hold
    "no vae": (lambda m: shutil.rmtree(m / "vae"), "vae/"),
    "empty tokenizer": (lambda m: _empty(m / "tokenizer"), "tokenizer/"),
    "truncated text encoder": (
        lambda m: _truncate(m / "text_encoder" / "model.safetensors"),
        "text_encoder/",
    ),
    "garbage unet weights": (
        lambda m: (m / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 64),
        "unet/",
    ),
    "no unet weights": (
        lambda m: (m / "unet" / "diffusion_pytorch_model.safetensors").unlink(),
        "unet/",
    ),
    "unet config not json": (lambda m: (m / "unet" / "config.json").write_text("{"), "unet/"),
    "scheduler config a list": (
        lambda m: (m / "scheduler" / "scheduler_config.json").write_text("[1]"),
        "scheduler/",
    ),
    "tokenizer files garbage": (
        lambda m: [f.write_text("garbage") for f in (m / "tokenizer").iterdir()],
        "tokenizer/",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_broken_model_folder_is_one_line(damage, tiny_model, tmp_path):
    model = shutil.copytree(tiny_model, tmp_path / "model")
    fn, part = DAMAGE[damage]
    fn(model)
    with pytest.raises(UserError) as e:
        load_components(model)
    msg = str(e.value)
    assert "\n" not in msg and str(model) in msg and part in msg and "init-model" in msg, msg


def test_broken_model_folder_via_cli_is_one_line(tiny_model, data, tmp_path, monkeypatch, capsys):
    model = shutil.copytree(tiny_model, tmp_path / "model")
    shutil.rmtree(model / "vae")
    args = ["sample", "--model", model, "--layouts", data, "--out", tmp_path / "s"]
    code, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and len(err) == 1 and "vae/" in err[0], err


def test_pixel_model_needs_no_vae(tiny_pixel_model):
    assert load_components(tiny_pixel_model, gated=False).vae is None


# --------------------------------------------------------------------------- the hub


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Record every ``snapshot_download`` call; the hub itself is not under test."""
    calls = []

    def fake(repo_id, *, local_files_only=False, **_):
        calls.append((repo_id, local_files_only))
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    return calls


MISSING_PATHS = [
    "models/sd15",  # relative, its parent exists here: a path, not an org
    "./sd15/model",
    "../elsewhere/sd15",
    "/no/such/model",
    "~/no-such-model-folder",
    "runs/train/model",
    "sd15",
    "models\\sd15",
    "models/sd15/",
]


@pytest.mark.parametrize("offline", ["1", ""])
@pytest.mark.parametrize("model", MISSING_PATHS)
def test_missing_local_path_is_never_sent_to_the_hub(model, offline, hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    with pytest.raises(UserError, match="does not exist") as e:
        resolve_model(model)
    assert hub == [] and "\n" not in str(e.value) and "init-model" in str(e.value)


@pytest.mark.parametrize("offline", ["1", None])
def test_hub_id_only_looks_in_the_cache(offline, hub, monkeypatch):
    """Online or not, nothing is downloaded at run time: the cache, then one line."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    with pytest.raises(UserError, match="nor in the Hugging Face cache") as e:
        resolve_model("someone/some-model")
    assert hub == [("someone/some-model", True)] and "init-model" in str(e.value)


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """The real huggingface_hub with an empty cache, HF_HUB_OFFLINE unset, and a network
    that is unreachable: every connection attempt is recorded and refused."""
    import socket

    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network unreachable (test)")

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse(None, a[0]))
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    return attempts, cache


@pytest.mark.parametrize("model", ["models/x", "someone/some-model"])
def test_a_relative_hub_like_id_opens_no_connection(model, no_network):
    """``models/x`` with no ``models/`` folder here reads as a hub id; it is looked up in
    the (empty) cache only, so the unreachable network is never tried."""
    attempts, _ = no_network
    with pytest.raises(UserError, match="nor in the Hugging Face cache") as e:
        resolve_model(model)
    assert attempts == [] and "\n" not in str(e.value)


def test_a_cached_hub_id_resolves_without_the_network(no_network):
    attempts, cache = no_network
    repo = cache / "models--models--x"
    snapshot = repo / "snapshots" / ("0" * 40)
    (snapshot / "unet").mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    assert resolve_model("models/x") == snapshot
    assert attempts == []


def test_existing_local_folder_never_reaches_the_hub(hub, tiny_model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    os.symlink(tiny_model, "models/sd15")
    assert resolve_model("models/sd15") == Path("models/sd15")
    assert hub == []


# --------------------------------------------------------------------------- adapters


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_adapters_are_refused(bad, tiny_model, tmp_path):
    unet = load_components(tiny_model).unet
    path = save_adapters(unet, tmp_path / "adapters.safetensors")
    state = load_file(path)
    key = next(k for k in sorted(state) if k.endswith("fuser.alpha_attn"))
    state[key] = torch.full_like(state[key], bad)
    save_file(state, path)
    before = adapter_state_dict(unet)
    with pytest.raises(UserError, match="NaN or infinite") as e:
        load_adapters(unet, path)
    assert key in str(e.value)
    after = adapter_state_dict(unet)
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was loaded


def test_sample_with_nan_adapters_exits_2(tiny_model, data, tmp_path, monkeypatch, capsys):
    unet = load_components(tiny_model).unet
    path = save_adapters(unet, tmp_path / "adapters.safetensors")
    state = load_file(path)
    key = next(k for k in sorted(state) if k.startswith("position_net."))
    state[key][..., 0] = float("nan")
    save_file(state, path)
    args = ["sample", "--model", tiny_model, "--layouts", data, "--adapters", path]
    code, err = run_cli(monkeypatch, capsys, *args, "--out", tmp_path / "s", "--steps", "1")
    assert code == 2 and len(err) == 1 and "NaN" in err[0], err
