import pytest

from bertkit import Encoder, EncoderConfig, preset
from bertkit.config import PRESETS, FinetuneConfig, PretrainConfig, TrainConfig, load_sections


@pytest.mark.parametrize("name, expected", [("base", 110e6), ("large", 340e6)])
def test_parameter_counts_match_the_paper(name, expected):
    n = Encoder(preset(name)).num_parameters()
    assert abs(n - expected) / expected <= 0.02, f"{name}: {n:,} parameters"


def test_presets_have_the_published_shapes():
    shapes = {k: (c.num_layers, c.hidden_size) for k, c in PRESETS.items()}
    assert shapes == {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512),
                      "base": (12, 768), "large": (24, 1024)}
    assert all(c.intermediate_size == 4 * c.hidden_size for c in PRESETS.values())


def test_preset_overrides_and_unknown_name():
    assert preset("tiny", vocab_size=1000).vocab_size == 1000
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset("huge")


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_size=100, num_heads=3), "not divisible"),
    (dict(hidden_act="swish"), "hidden_act"),
    (dict(num_layers=0), "num_layers must be positive"),
    (dict(hidden_dropout=1.0), "hidden_dropout"),
    (dict(family="gpt"), "family"),
])
def test_invalid_configs_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        EncoderConfig(**changes)


def test_config_is_frozen():
    with pytest.raises(Exception):
        preset("tiny").hidden_size = 3


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("recipe, message", [
    ("pretrain:\n  corpus: [a.txt]\n  batch_size: 0\n", r"r.yaml:3: pretrain.batch_size must be positive, got 0"),
    ("pretrain:\n  corpus: [a.txt]\n  mask_rate: [0.1, 0.2]\n", r"r.yaml:3: pretrain.mask_rate: expected a number, got \[0.1, 0.2\]"),
    ("pretrain:\n  corpus: [a.txt]\n  batch_size: [8\n", r"r.yaml:4: not valid YAML"),
    ("- just\n- a list\n", r"r.yaml: expected sections"),
    ("pretrain: {corpus: [a.txt], preset: tiny}\ntrain: {lr: 0.1}\nby_preset: {tiny: {train: {lr: 0.2}}}\n",
     r"r.yaml:3: train.lr is 0.2 for preset tiny but 0.1 at line 2: set it in one place"),
])
def test_recipe_errors_name_the_file_line_and_field(tmp_path, recipe, message):
    with pytest.raises(ValueError, match=message):
        load_sections(write(tmp_path / "r.yaml", recipe), {"pretrain": PretrainConfig, "train": TrainConfig})


def test_shipped_recipes_find_their_held_out_corpus_from_any_folder(tmp_path, monkeypatch, data_dir):
    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    monkeypatch.chdir(tmp_path)
    for recipe in ("bert", "roberta", "spanbert", "mlm"):
        got = load_sections(str(root / "configs" / f"{recipe}.yaml"), {"pretrain": PretrainConfig, "train": TrainConfig},
                            direct={"pretrain": {"corpus": ("x",)}})
        assert __import__("pathlib").Path(got["pretrain"].eval_corpus).is_file(), got["pretrain"].eval_corpus


@pytest.mark.parametrize("override, message", [("--train.lr=.nan", "--train.lr: train.lr: expected a number, got nan"),
                                               ("--finetune.decoder=crff", "--finetune.decoder: finetune.decoder must be one of")])
def test_flags_that_cannot_work_are_refused_when_read(override, message):
    sections = {"finetune": FinetuneConfig, "train": TrainConfig}
    with pytest.raises(ValueError, match=message):
        load_sections(None, sections, [override], {"finetune": {"model": "m", "train": "t"}})
