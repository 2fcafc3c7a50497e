import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gambar.cli import main
from gambar.provenance import read_provenance
from helpers_models import make_tiny_pipeline


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def gen(model, *args):
    return main(["generate", "--model", str(model), "--steps", "3", "-q", *args])


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_n_images_with_output_and_grid(tiny_model_dir, in_tmp):
    assert gen(tiny_model_dir, "a red circle", "-n", "3", "--seed", "7", "-o", "a.png",
               "--grid") == 0
    seeds = [read_provenance(in_tmp / f"a-{k}.png")["seed"] for k in range(3)]
    assert seeds == [7, 8, 9]
    grid = read_provenance(in_tmp / "a-grid.png")
    assert [p["seed"] for p in grid["grid_of"]] == [7, 8, 9]


def test_default_output_name_and_random_seed(tiny_model_dir, in_tmp):
    assert gen(tiny_model_dir, "Tiga bintang biru!") == 0
    (path,) = (in_tmp / "outputs").iterdir()
    prov = read_provenance(path)
    assert path.name == f"tiga-bintang-biru-{prov['seed']}.png"
    assert prov["prompt"] == "Tiga bintang biru!"


def test_existing_file_is_never_overwritten_silently(tiny_model_dir, in_tmp, capsys):
    (in_tmp / "a.png").write_bytes(b"precious")
    assert gen(tiny_model_dir, "a red circle", "-o", "a.png") == 2
    assert "already exists" in one_line_error(capsys)
    assert (in_tmp / "a.png").read_bytes() == b"precious"
    assert gen(tiny_model_dir, "a red circle", "-o", "a.png", "--overwrite") == 0
    assert read_provenance(in_tmp / "a.png")["prompt"] == "a red circle"


def test_info_and_replay_reproduce_pixels(tiny_model_dir, in_tmp, capsys):
    assert gen(tiny_model_dir, "dua bintang biru", "-n", "2", "--seed", "3", "-o", "x.png",
               "--sampler", "ddpm", "--guidance", "2.5", "--negative", "red",
               "--precision", "bf16") == 0
    assert main(["info", "x-1.png"]) == 0
    out = capsys.readouterr().out
    assert "dua bintang biru" in out and "ddpm" in out and "2.5" in out and "bf16" in out
    assert main(["generate", "--model", str(tiny_model_dir), "--replay", "x-1.png",
                 "-o", "y.png", "-q"]) == 0
    a = np.asarray(Image.open(in_tmp / "x-1.png"))
    b = np.asarray(Image.open(in_tmp / "y.png"))
    assert np.array_equal(a, b)


def test_replay_with_another_model_is_refused(tiny_model_dir, in_tmp, capsys):
    assert gen(tiny_model_dir, "a red circle", "-o", "x.png", "--seed", "1") == 0
    other = make_tiny_pipeline()
    with np.errstate(all="ignore"):
        for p in other.model.parameters():
            p.data.mul_(1.01)
    other.save(in_tmp / "other")
    assert main(["generate", "--model", str(in_tmp / "other"), "--replay", "x.png",
                 "-o", "y.png", "-q"]) == 2
    assert "was made by model" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", ""], "prompt is empty"),
        (["generate"], "give a prompt"),
        (["generate", "a red circle", "--size", "33"], "size must be"),
        (["generate", "a red circle", "-n", "0"], "-n must be"),
        (["generate", "a red circle", "-o", "x.jpg"], "must be a .png"),
        (["generate", "a red circle", "--model", "no/such/model"], "no model named"),
        (["info", "missing.png"], "no such image"),
        (["generate", "--replay", "missing.png"], "no such image"),
    ],
)
def test_user_mistakes_are_one_line_errors(tiny_model_dir, in_tmp, capsys, args, message):
    if args[0] == "generate" and "--model" not in args:
        args = [*args, "--model", str(tiny_model_dir), "-q"]
    assert main(args) == 2
    assert message in one_line_error(capsys)


def test_corrupt_image_for_info(in_tmp, capsys):
    (in_tmp / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert main(["info", "bad.png"]) == 2
    assert "not a readable image" in one_line_error(capsys)


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a command loads a model (its mistake should be found before)."""
    import gambar.commands.generate as generate

    def load(*args, **kwargs):
        raise AssertionError("a model was loaded before the mistake was found")

    monkeypatch.setattr(generate, "load", load)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("/proc/x.png", "does not accept new files"),  # as root, os.access would say yes
        ("folder.png", "is a folder"),
        ("file.png/x.png", "is a file, not a folder"),
        ("x" * 260 + ".png", "too long"),
    ],
)
def test_unwritable_output_is_refused_before_any_work(in_tmp, capsys, no_model_load, output,
                                                      message):
    (in_tmp / "folder.png").mkdir()
    (in_tmp / "file.png").write_bytes(b"precious")
    assert main(["generate", "a red circle", "-o", output, "--overwrite", "-q"]) == 2
    assert message in one_line_error(capsys)
    assert (in_tmp / "file.png").read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a red \udcff circle", "invalid character U+DCFF at position 6"),  # argv's b"\xff"
        ("\u200b\u200d\ufeff", "prompt is empty"),  # zero-width only
        (" \t\u3000\x07 ", "prompt is empty"),  # spaces and a control character
    ],
)
def test_unusable_prompt_is_refused_before_any_work(in_tmp, capsys, no_model_load, prompt,
                                                    message):
    assert main(["generate", prompt, "-q"]) == 2
    assert message in one_line_error(capsys)


def test_prompt_from_argv_bytes_that_are_not_utf8(in_tmp):
    """The real path: bytes in argv become surrogates in Python, then a one-line error."""
    done = subprocess.run([sys.executable, "-m", "gambar.cli", "generate", b"a red \xff circle",
                           "--model", "nope", "-q"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: the prompt holds an invalid character U+DCFF")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "0"], "size must be"),  # 0 is falsy: it once became the model's 64
        (["-n", "-1"], "-n must be"),
        (["-n", str(10**12)], "-n must be"),
        (["--batch-size", "0"], "batch size must be"),
        (["--batch-size", "-3"], "batch size must be"),
        (["--steps", "-1"], "steps must be"),
        (["--steps", str(10**12)], "steps must be"),
        (["--seed", "-1"], "seed must be"),
        (["--seed", str(2**63)], "seed must be"),
        (["--seed", str(2**63 - 1), "-n", "2"], "seed must be"),  # the second seed overflows
        (["--guidance", "nan"], "guidance must be"),
        (["--negative", "\udcff"], "negative prompt holds an invalid character"),
    ],
)
def test_out_of_range_options_are_one_line_errors(tiny_model_dir, in_tmp, capsys, args,
                                                   message):
    assert gen(tiny_model_dir, "a red circle", "-o", "x.png", *args) == 2
    assert message in one_line_error(capsys)
    assert not (in_tmp / "x.png").exists()


def test_a_model_that_cannot_draw_is_a_one_line_error(in_tmp, capsys):
    from gambar.pipeline import builtin_models

    if "contrastive" not in builtin_models():
        pytest.skip("no built-in contrastive model shipped")
    assert main(["generate", "a red circle", "--model", "contrastive", "-q"]) == 2
    assert "cannot draw" in one_line_error(capsys)


def test_sheet_refuses_bad_output_scale_and_prompt_file(tiny_model_dir, in_tmp, capsys):
    (in_tmp / "folder.png").mkdir()
    (in_tmp / "latin1.txt").write_bytes("caf\xe9 merah\n".encode("latin-1"))
    sheet = ["sheet", "a red circle", "--model", str(tiny_model_dir), "--steps", "2", "-q"]
    for args, message in [(["-o", "folder.png", "--overwrite"], "is a folder"),
                          (["--scale", "1001"], "--scale must be"),
                          (["--prompts-file", "latin1.txt"], "not UTF-8"),
                          (["--seeds", *map(str, range(2000)), "--scale", "16"], "million pixels")]:
        assert main([*sheet, *args]) == 2
        assert message in one_line_error(capsys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "0"], "--n must be between 1 and"),
        (["--n", str(10**9)], "--n must be between 1 and"),  # once a list of 10^11 jobs
        (["--per-category", "0"], "--per-category must be at least 1"),
        (["--retrieval-n", "0"], "--retrieval-n must be between 1"),
        (["--out", "file.png"], "is a file, not a folder"),  # once found after the evaluation
    ],
)
def test_evaluate_refuses_bad_counts_before_any_work(tiny_model_dir, in_tmp, capsys,
                                                     monkeypatch, args, message):
    import gambar.evaluation.harness as harness

    def evaluate(*a, **k):
        raise AssertionError("the evaluation started before the mistake was found")

    monkeypatch.setattr(harness, "evaluate", evaluate)
    (in_tmp / "file.png").write_bytes(b"precious")
    assert main(["evaluate", str(tiny_model_dir), "-q", *args]) == 2
    assert message in one_line_error(capsys)


def test_error_quoting_a_line_break_stays_one_line(in_tmp, capsys):
    assert main(["info", "no\nsuch.png"]) == 2
    assert "no\\nsuch.png" in one_line_error(capsys)


def test_help_runs_as_a_command():
    out = subprocess.run([sys.executable, "-m", "gambar.cli", "generate", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--guidance" in out and "--replay" in out and "provenance" in out


def test_a_file_name_too_long_for_the_system_is_one_line(in_tmp, capsys):
    """Path.is_file() raises on ENAMETOOLONG; each of these was a traceback."""
    long = "a" * 300
    for argv in (["info", f"{long}.png"], ["generate", "--replay", f"{long}.png"],
                 ["sheet", "--prompts-file", f"{long}.txt"], ["ab", "ranking", "--db", long],
                 ["train", f"{long}.toml"]):
        assert main(argv) == 2, argv
        one_line_error(capsys)


def test_prompts_in_four_byte_letters_get_a_usable_default_name(tiny_model_dir, in_tmp):
    prompt = "\U0001d41a\U0001d42b\U0001d41e\U0001d41d " * 30  # pasted "bold" text, 4 bytes each
    assert gen(tiny_model_dir, prompt, "--seed", "1") == 0
    (path,) = (in_tmp / "outputs").iterdir()
    assert len(path.name.encode()) <= 255 and read_provenance(path)["prompt"] == prompt


def test_replaying_a_sheet_points_to_its_cells(tiny_model_dir, in_tmp, capsys):
    assert main(["sheet", "a red circle", "--seeds", "1", "2", "--model", str(tiny_model_dir),
                 "--steps", "2", "-o", "sh.png", "-q"]) == 0
    capsys.readouterr()
    assert main(["generate", "--replay", "sh.png", "--model", str(tiny_model_dir)]) == 2
    err = one_line_error(capsys)
    assert "sample sheet" in err and "gambar info" in err


def test_an_emoji_newer_than_pythons_unicode_tables_is_a_prompt():
    from gambar.text.checks import check_prompt

    assert check_prompt("\U0001fae8") == "\U0001fae8"  # U+1FAE8 (Unicode 15): "Cn" to Python 3.11


def test_img2img_from_the_command_line_replays_only_with_the_same_init(tiny_model_dir, in_tmp,
                                                                         capsys):
    assert gen(tiny_model_dir, "a red circle", "--seed", "4", "-o", "init.png") == 0
    assert gen(tiny_model_dir, "three blue stars", "--seed", "5", "-o", "x.png",
               "--init", "init.png", "--strength", "0.7", "--steps", "6") == 0
    prov = read_provenance(in_tmp / "x.png")
    assert prov["strength"] == 0.7 and set(prov["inputs"]) == {"init"}
    assert main(["generate", "--model", str(tiny_model_dir), "--replay", "x.png", "-o", "y.png",
                 "-q", "--init", "init.png"]) == 0
    assert np.array_equal(np.asarray(Image.open(in_tmp / "x.png")),
                          np.asarray(Image.open(in_tmp / "y.png")))
    # Without the init image, or with another one, a replay cannot be exact: refused.
    assert main(["generate", "--model", str(tiny_model_dir), "--replay", "x.png", "-o", "z.png",
                 "-q"]) == 2
    assert "pass the same file with --init" in one_line_error(capsys)
    assert main(["generate", "--model", str(tiny_model_dir), "--replay", "x.png", "-o", "z.png",
                 "-q", "--init", "y.png"]) == 2
    assert "--init differs from the 'init' input" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layout", "layout.json"], "takes no 'layout' input"),
        (["--init", "missing.png"], "--init missing.png"),
        (["--strength", "0.5"], "strength needs the 'init' input"),
        (["--eta", "0.5"], "eta applies to the ddim sampler only"),
        (["--steps", "5000"], "steps must be between 1 and 1000"),
    ],
)
def test_option_and_input_mistakes_are_one_line(tiny_model_dir, in_tmp, capsys, args, message):
    (in_tmp / "layout.json").write_text('[{"box": [0, 0, 0.5, 0.5], "phrase": "x"}]')
    assert gen(tiny_model_dir, "a red circle", *args) == 2
    assert message in one_line_error(capsys)
    assert not (in_tmp / "outputs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--init", "init.png", "--mask", "small.png"], "mask is 16x16 but the init image 32x32"),
        (["--init", "notes.txt"], "--init notes.txt: not an image"),
        (["--init", "init.png", "--strength", "1.5"], "strength must be between 0 and 1"),
        (["--init", "init.png", "--strength", "-0.1"], "strength must be between 0 and 1"),
    ],
)
def test_img2img_input_mistakes_are_one_line(tiny_model_dir, in_tmp, capsys, args, message):
    Image.new("RGB", (32, 32), "red").save(in_tmp / "init.png")
    Image.new("L", (16, 16), 255).save(in_tmp / "small.png")
    (in_tmp / "notes.txt").write_text("not a picture")
    assert gen(tiny_model_dir, "a red circle", *args) == 2
    assert message in one_line_error(capsys)
    assert not (in_tmp / "outputs").exists()


def test_option_flags_come_from_the_families_options(capsys):
    from gambar.generators.diffusion.options import DiffusionOptions

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = capsys.readouterr().out
    for spec in DiffusionOptions.specs():
        assert spec.flag in out
    for name in ("--init", "--mask", "--layout", "--image"):
        assert name in out


def test_train_set_reaches_a_per_group_optimiser_table(in_tmp, capsys):
    """--set may create [train.optimizers.<group>]; a group the family lacks is one line."""
    from pathlib import Path

    recipe = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.toml")
    assert main(["train", recipe, "-q", "--set", "train.optimizers.nope.lr=1e-4",
                 "--set", f"train.run_dir={in_tmp / 'run'}"]) == 2
    assert "[train.optimizers.nope] names no parameter group" in one_line_error(capsys)
    assert not (in_tmp / "run").exists()


@pytest.mark.parametrize(("args", "given"), [
    (["another prompt"], "a prompt"), (["--steps", "7"], "--steps"),
    (["--negative", "red"], "--negative"), (["--seed", "99"], "--seed"), (["-n", "2"], "-n")])
def test_replay_refuses_what_it_would_otherwise_ignore(tiny_model_dir, in_tmp, capsys, args,
                                                        given):
    assert gen(tiny_model_dir, "a red circle", "-o", "x.png", "--seed", "1") == 0
    argv = ["generate", "--model", str(tiny_model_dir), "--replay", "x.png", "-o", "y.png", "-q"]
    assert main(argv + args) == 2
    assert f"leave out {given}" in one_line_error(capsys)
    assert not (in_tmp / "y.png").exists()


def test_a_clip_is_written_as_one_animated_png_with_its_provenance(in_tmp, monkeypatch):
    """Generated.frames: one frame -> a PNG, several -> an animated PNG (same provenance)."""
    import gambar.commands.generate as command
    from helpers_server import BoxesPipeline

    clip = BoxesPipeline("clip", frames=3)
    monkeypatch.setattr(command, "load", lambda model: clip)
    monkeypatch.setattr(command, "check_early", lambda *args: None)
    (in_tmp / "boxes.json").write_text('[{"box": [0, 0, 0.5, 1], "phrase": "x"}]')
    assert main(["generate", "a red box", "--model", "clip", "--seed", "3", "-o", "c.png",
                 "-q", "--layout", "boxes.json"]) == 0
    with Image.open(in_tmp / "c.png") as im:
        assert im.n_frames == 3
        first = im.convert("RGB").getpixel((0, 0))
        im.seek(2)
        assert im.convert("RGB").getpixel((0, 0)) != first  # the frames darken
    assert read_provenance(in_tmp / "c.png")["family"] == "boxes"
