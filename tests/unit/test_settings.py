from pathlib import Path

import pytest

from retrieval.errors import ConfigError
from retrieval.settings import load_settings

from helpers import ROOT


def test_precedence_overrides_env_file_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    cfg = tmp_path / "c.yaml"
    cfg.write_text("retrieval:\n  hnsw_ef_search: 99\n  max_k: 7\n  default_k_faq: 2\n")
    monkeypatch.setenv("RETRIEVAL_MAX_K", "8")
    s = load_settings(cfg, default_k_faq=4)
    assert (s.hnsw_ef_search, s.max_k, s.default_k_faq) == (99, 8, 4)
    assert load_settings().hnsw_ef_search == 48


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    assert s.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/retrieval.db"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image_weight": 0.0, "text_weight": 0.0}, "cannot both be 0"),
        ({"answer_threshold": 0.3, "suggest_threshold": 0.5}, "must not exceed"),
        ({"hnsw_m": 0}, "hnsw_m"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_invalid_settings(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**values)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "none.toml")


def test_every_setting_is_documented() -> None:
    from retrieval.settings import Settings

    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [name for name in Settings.model_fields if f"`{name}`" not in doc]
    assert not missing, f"add these settings to docs/configuration.md: {missing}"


def test_encoder_dtype_auto_uses_bfloat16_only_where_the_cpu_has_it() -> None:
    from retrieval.encoders.base import native_bf16, resolve_dtype

    amx = "processor : 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n"
    avx512bf16 = "flags : fpu avx512f avx512_bf16\n"
    plain = "flags : fpu sse avx2 avx512f avx512bw\n"
    assert native_bf16(amx) and native_bf16(avx512bf16)
    assert not native_bf16(plain) and not native_bf16("")
    assert resolve_dtype("auto", "cpu", amx) == "bfloat16"
    assert resolve_dtype("auto", "cpu", plain) == "float32"
    assert resolve_dtype("auto", "cuda", amx) == "float32"
    assert resolve_dtype("float32", "cpu", amx) == "float32"
    assert resolve_dtype("bfloat16", "cpu", plain) == "bfloat16"
    with pytest.raises(ValueError, match="auto, float32 or bfloat16"):
        resolve_dtype("float16", "cpu", amx)


def test_encoder_dtype_setting_is_checked() -> None:
    from pydantic import ValidationError

    assert load_settings(None).encoder_dtype == "float32"
    assert load_settings(None, encoder_dtype="auto").encoder_dtype == "auto"
    with pytest.raises((ValidationError, ConfigError)):
        load_settings(None, encoder_dtype="int8")


def test_text_runtime_auto_picks_onnx_for_float32_on_a_cpu_where_installed() -> None:
    from retrieval.encoders.onnx_text import choose_runtime
    from retrieval.errors import ModelUnavailable

    assert choose_runtime("auto", "cpu", "float32", installed=True) == "onnx"
    assert choose_runtime("auto", "cpu", "float32", installed=False) == "torch"
    assert choose_runtime("auto", "cuda", "float32", installed=True) == "torch"
    assert choose_runtime("auto", "cpu", "bfloat16", installed=True) == "torch"
    assert choose_runtime("torch", "cpu", "float32", installed=True) == "torch"
    assert choose_runtime("onnx", "cpu", "float32", installed=True) == "onnx"
    with pytest.raises(ConfigError, match="runs float32 on the CPU"):
        choose_runtime("onnx", "cuda", "float32", installed=True)
    with pytest.raises(ModelUnavailable, match="pip install onnxruntime onnx"):
        choose_runtime("onnx", "cpu", "float32", installed=False)
    with pytest.raises(ConfigError, match="auto, torch, onnx"):
        choose_runtime("tensorrt", "cpu", "float32", installed=True)
    assert load_settings(None).text_runtime == "auto"
    from pydantic import ValidationError

    with pytest.raises((ValidationError, ConfigError)):
        load_settings(None, text_runtime="tensorrt")


def test_min_cosine_compares_matching_rows() -> None:
    import numpy as np

    from retrieval.encoders.onnx_text import min_cosine

    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert min_cosine(a, a * 3) == pytest.approx(1.0)
    assert min_cosine(a, np.array([[1.0, 0.0], [2.0, 0.0]])) == pytest.approx(0.0)
    assert min_cosine(a, np.array([[-1.0, 0.0], [0.0, 1.0]])) == pytest.approx(-1.0)
    assert min_cosine(a, a[:1]) == -1.0  # shapes differ: no agreement
    assert min_cosine(np.zeros((0, 2)), np.zeros((0, 2))) == 1.0


def test_the_build_commands_take_their_encoding_workers_and_cluster() -> None:
    """``--encode-workers`` and ``--encode-cluster`` on ingest and reindex become settings;
    without them the file, environment and defaults decide (one process, no cluster)."""
    import argparse

    from retrieval.cliargs import add_common_options, add_encode_workers, settings_from_args

    parser = argparse.ArgumentParser()
    add_common_options(parser)
    add_encode_workers(parser)
    given = settings_from_args(
        parser.parse_args(["--encode-workers", "3", "--encode-cluster", "tcp://10.0.0.5:8786"]),
        promoted=False,
    )
    assert (given.encode_workers, given.encode_cluster) == (3, "tcp://10.0.0.5:8786")
    default = settings_from_args(parser.parse_args([]), promoted=False)
    assert (default.encode_workers, default.encode_cluster) == (1, None)
