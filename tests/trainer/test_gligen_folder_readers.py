"""``export-gligen``'s tokenizer/ opens with transformers 4.x as well as 5.x.

transformers 5 saves a CLIP tokenizer as ``tokenizer.json`` alone; transformers 4's
``CLIPTokenizer`` (the slow one, which diffusers' pipelines load) needs ``vocab.json``
and ``merges.txt``. The export therefore copies the base model's files as they are.
"""

import json
import os
import shutil
import subprocess

import pytest

from trainer.gligen_folder import write_gligen_folder

PROMPT = "a photo of a dog and two cats"


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    return write_gligen_folder(tiny_model, None, tmp_path_factory.mktemp("g") / "gligen")


def test_tokenizer_files_are_the_base_models_bytes(tiny_model, exported):
    from transformers import CLIPTokenizer

    base, tok = tiny_model / "tokenizer", exported / "tokenizer"
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tok / name).read_bytes() == (base / name).read_bytes(), name
    ids = CLIPTokenizer.from_pretrained(base)(PROMPT).input_ids
    assert CLIPTokenizer.from_pretrained(tok)(PROMPT).input_ids == ids
    # what transformers 4 reads: vocab.json + merges.txt, without tokenizer.json
    only_bpe = exported.parent / "bpe"
    shutil.copytree(tok, only_bpe)
    (only_bpe / "tokenizer.json").unlink()
    slow = CLIPTokenizer.from_pretrained(only_bpe)
    assert slow(PROMPT).input_ids == ids and slow.model_max_length == 77


def test_base_with_tokenizer_json_only_gets_vocab_and_merges_back(tiny_model, tmp_path):
    """A base exported before this fix (tokenizer.json alone): re-exporting repairs it."""
    base = tmp_path / "old"
    shutil.copytree(tiny_model, base)
    for name in ("vocab.json", "merges.txt"):
        (base / "tokenizer" / name).unlink()
    out = write_gligen_folder(base, None, tmp_path / "gligen")
    tok = out / "tokenizer"
    vocab = json.loads((tok / "vocab.json").read_text())
    assert vocab == json.loads((tiny_model / "tokenizer" / "vocab.json").read_text())
    merges = (tok / "merges.txt").read_text().splitlines()
    assert merges == (tiny_model / "tokenizer" / "merges.txt").read_text().splitlines()


def test_transformers_4_loads_the_exported_tokenizer(exported, tiny_model):
    """Runs only where a Python with transformers<5 is named by GROUNDSET_TRANSFORMERS4_PYTHON
    (``python -m venv /tmp/tf4 && /tmp/tf4/bin/pip install 'transformers<5' tokenizers``;
    no torch needed): that interpreter's CLIPTokenizer must load the folder and tokenize
    like the base model."""
    python = os.environ.get("GROUNDSET_TRANSFORMERS4_PYTHON")
    if not python or not os.path.exists(python):
        pytest.skip("no transformers 4 environment (set GROUNDSET_TRANSFORMERS4_PYTHON)")
    script = (
        "import json, sys, transformers\n"
        "from transformers import CLIPTokenizer\n"
        "assert transformers.__version__.startswith('4.'), transformers.__version__\n"
        "t = CLIPTokenizer.from_pretrained(sys.argv[1])\n"
        "print(json.dumps([t.model_max_length, t(sys.argv[2]).input_ids]))\n"
    )
    run = subprocess.run(
        [python, "-c", script, str(exported / "tokenizer"), PROMPT],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TRANSFORMERS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    from transformers import CLIPTokenizer

    want = CLIPTokenizer.from_pretrained(tiny_model / "tokenizer")(PROMPT).input_ids
    assert json.loads(run.stdout.strip().splitlines()[-1]) == [77, want]
