import numpy as np
import pytest

from retrieval.fusion import Fusion, fuse, fused_scores, modality_scores, normalized_weights


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_weights_are_normalised_keeping_their_ratio() -> None:
    a, b = normalized_weights(3.0, 4.0)
    assert a == pytest.approx(0.6) and b == pytest.approx(0.8)
    with pytest.raises(ValueError):
        normalized_weights(0.0, 0.0)


def test_fused_vector_layout_and_unit_norm() -> None:
    f = Fusion(image_dim=2, text_dim=3, image_weight=1.0, text_weight=1.0)
    v = fuse(np.array([[2.0, 0.0]]), np.array([[0.0, 0.0, 5.0]]), f)
    s = np.sqrt(0.5)
    np.testing.assert_allclose(v[0], [s, 0, 0, 0, s], atol=1e-6)
    assert np.linalg.norm(v[0]) == pytest.approx(1.0)


def test_inner_product_of_full_vectors_is_weighted_cosine_mix() -> None:
    f = Fusion(image_dim=2, text_dim=2, image_weight=3.0, text_weight=4.0)  # weights 0.36 / 0.64
    qi, qt = unit(1, 0), unit(1, 1)
    pi, pt = unit(0, 1), unit(1, 0)
    q = fuse(qi[None], qt[None], f)[0]
    p = fuse(pi[None], pt[None], f)[0]
    expected = 0.36 * float(qi @ pi) + 0.64 * float(qt @ pt)
    assert float(q @ p) == pytest.approx(expected, abs=1e-6)
    ci, ct = modality_scores(q, p[None], f)
    assert ci[0] == pytest.approx(0.0, abs=1e-6) and ct[0] == pytest.approx(
        float(qt @ pt), abs=1e-6
    )
    assert fused_scores(ci, ct, f)[0] == pytest.approx(expected, abs=1e-6)


def test_missing_modality_on_either_side_scores_on_the_shared_one() -> None:
    f = Fusion(image_dim=2, text_dim=2)
    text_only_query = fuse(None, unit(1, 0)[None], f, n=1)[0]
    both = fuse(unit(0, 1)[None], unit(1, 0)[None], f)
    text_only_product = fuse(np.zeros((1, 2)), unit(0.6, 0.8)[None], f)
    image_only_product = fuse(unit(1, 0)[None], np.zeros((1, 2)), f)
    items = np.vstack([both, text_only_product, image_only_product])
    ci, ct = modality_scores(text_only_query, items, f)
    assert np.isnan(ci).all()
    np.testing.assert_allclose(ct[:2], [1.0, 0.6], atol=1e-6)
    assert np.isnan(ct[2])
    scores = fused_scores(ci, ct, f)
    np.testing.assert_allclose(
        scores[:2], [1.0, 0.6], atol=1e-6
    )  # the text cosine itself, not a diluted mix
    assert np.isnan(scores[2])  # nothing in common: not comparable


def test_image_projection_shrinks_the_image_part() -> None:
    proj = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=np.float32)
    f = Fusion(image_dim=3, text_dim=2, image_projection=proj)
    assert f.dim == 4
    v = fuse(np.array([[0.0, 1.0, 1.0]]), np.array([[1.0, 0.0]]), f)[0]
    s = np.sqrt(0.5)
    np.testing.assert_allclose(v, [0, s, s, 0], atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        Fusion(image_dim=4, text_dim=2, image_projection=proj)


def test_fingerprint_changes_with_weights_and_projection() -> None:
    a = Fusion(4, 4, 0.5, 0.5).fingerprint()
    assert a == Fusion(4, 4, 1.0, 1.0).fingerprint()  # same ratio, same fusion
    assert a != Fusion(4, 4, 0.3, 0.7).fingerprint()
    assert a != Fusion(4, 4, 0.5, 0.5, np.eye(4, dtype=np.float32)).fingerprint()


def test_zero_weight_modality_is_ignored() -> None:
    f = Fusion(image_dim=2, text_dim=2, image_weight=0.0, text_weight=1.0)
    q = fuse(unit(1, 0)[None], unit(1, 0)[None], f)[0]
    p = fuse(unit(0, 1)[None], unit(1, 0)[None], f)
    ci, ct = modality_scores(q, p, f)
    assert np.isnan(ci[0]) and fused_scores(ci, ct, f)[0] == pytest.approx(1.0)
