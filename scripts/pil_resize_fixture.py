"""Writes tests/fixtures/pil_resize.json: what torchvision's PIL path makes of a test image.

    .venv/bin/python scripts/pil_resize_fixture.py     (needs Pillow)

usnet's Resize + CenterCrop and RandomResizedCrop (src/data/transform.rs) must give the very
bytes that torchvision gets from PIL (bilinear with antialiasing, 8-bit fixed point), so that a
model trained or evaluated here sees the images it would see in PyTorch. The image is a
deterministic pseudo-random pattern, so the fixture needs no image file.
"""
import json
from pathlib import Path

from PIL import Image


def pattern(c, h, w, seed):
    # An LCG, written out so that the Rust test can make the same bytes.
    state, data = seed, []
    for _ in range(c * h * w):
        state = (state * 1103515245 + 12345) % (1 << 31)
        data.append(state >> 23)
    return data


def to_pil(data, c, h, w):
    planes = [Image.frombytes("L", (w, h), bytes(data[i * h * w:(i + 1) * h * w])) for i in range(c)]
    return planes[0] if c == 1 else Image.merge("RGB", planes)


def to_chw(img):
    bands = img.split()
    return [v for band in bands for v in band.tobytes()]


cases = []
for c, h, w, seed in [(3, 23, 31, 1), (1, 7, 9, 2), (3, 40, 26, 3)]:
    data = pattern(c, h, w, seed)
    img = to_pil(data, c, h, w)
    for resize, crop in [(16, 12), (12, 10), (30, 30)]:
        # torchvision: Resize(resize) (shorter side, longer side truncated) then CenterCrop(crop).
        rh, rw = (resize, w * resize // h) if h <= w else (h * resize // w, resize)
        out = img.resize((rw, rh), Image.BILINEAR)
        top, left = int(round((rh - crop) / 2.0)), int(round((rw - crop) / 2.0))
        out = out.crop((left, top, left + crop, top + crop))
        cases.append({"c": c, "h": h, "w": w, "seed": seed, "op": "resize_center_crop", "resize": resize, "crop": crop, "out": to_chw(out)})
    for (i, j, ch, cw), size in [((3, 5, 15, 20), 9), ((0, 0, h, w), 11), ((2, 1, 4, 5), 8)]:
        if i + ch > h or j + cw > w:
            continue  # RandomResizedCrop's windows lie inside the image
        # torchvision's resized_crop: crop the window, then resize it to size x size.
        out = img.crop((j, i, j + cw, i + ch)).resize((size, size), Image.BILINEAR)
        cases.append({"c": c, "h": h, "w": w, "seed": seed, "op": "resized_crop", "window": [i, j, ch, cw], "size": size, "out": to_chw(out)})

path = Path(__file__).resolve().parent.parent / "tests/fixtures/pil_resize.json"
import PIL
path.write_text(json.dumps({"pillow": PIL.__version__, "cases": cases}) + "\n")
print(f"wrote {path} ({len(cases)} cases, Pillow {PIL.__version__})")
