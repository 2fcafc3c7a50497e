"""`gambar sheet`: a labelled prompts x seeds grid whose cells are the model's own images."""

import numpy as np
from PIL import Image

import gambar
from gambar.cli import main
from gambar.provenance import read_provenance
from gambar.sheet import DEFAULT_PROMPTS, SheetLayout, label


def test_sheet_cells_are_the_generated_images(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "sheet.png"
    prompts = ["a red circle", "dua bintang biru"]
    assert main(["sheet", *prompts, "--model", str(tiny_model_dir), "--seeds", "3", "5",
                 "--steps", "3", "--scale", "1", "-o", str(out), "-q"]) == 0
    sheet = np.asarray(Image.open(out).convert("RGB"))
    layout = SheetLayout(scale=1)
    side, pad = 32, layout.pad
    top = layout.font_size + 2 * pad
    assert sheet.shape == (top + 2 * (side + pad) + pad,
                           layout.label_width + 2 * (side + pad) + pad, 3)
    pipe = gambar.load(tiny_model_dir)
    for i, prompt in enumerate(prompts):
        for j, seed in enumerate((3, 5)):
            (alone,) = pipe.generate([prompt], seeds=[seed], steps=3, progress=False)
            y, x = top + i * (side + pad), layout.label_width + j * (side + pad) + pad
            cell = sheet[y:y + side, x:x + side].astype(int)
            assert np.abs(cell - np.asarray(alone.image, dtype=int)).max() <= 1
    provenance = read_provenance(out)["sheet_of"]
    assert [(p["prompt"], p["seed"]) for p in provenance] == [
        ("a red circle", 3), ("a red circle", 5), ("dua bintang biru", 3), ("dua bintang biru", 5)]
    # no silent overwrite; a clear one-line error
    assert main(["sheet", "a red circle", "--model", str(tiny_model_dir), "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: ")


def test_prompts_file_and_default_set(tmp_path, capsys):
    listing = tmp_path / "prompts.txt"
    listing.write_text("# comment\n\n")
    assert main(["sheet", "--prompts-file", str(listing), "-o", str(tmp_path / "s.png")]) == 2
    assert "no prompts" in capsys.readouterr().err
    marked = [p for p in DEFAULT_PROMPTS if label(p).endswith("[held-out]")]
    assert len(marked) >= 3 and label("a red circle") == "a red circle"
    assert any(p.split()[0] in ("sebuah", "tiga", "segitiga", "hati") for p in DEFAULT_PROMPTS)


def test_labels_count_what_the_judge_accepts():
    from gambar.data.shapes import fixed_split
    from gambar.pipeline import Generated

    sample = fixed_split("val", 1, 64)[0]
    right = Generated([sample.image], {})
    blank = Generated([Image.new("RGB", (64, 64), (255, 255, 255))], {})
    assert label(sample.caption, [right, blank, right]).endswith("(2/3 judged right)")
    assert label("a red apple", [blank]) == "a red apple"  # not a shapes prompt: no verdict
