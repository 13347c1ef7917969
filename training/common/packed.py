"""Model files that git keeps xz-compressed (`model.gguf.xz`, `tokenizer.json.xz`) and setup expands.

Why: every call of the device tool sends the tracked tree, at most 64 MiB, and the shipped models alone filled it.
Compressed, the classifier's weights and tokenizer take 4.7 MiB less, and a fresh clone still gets every file with
no manual step: `scripts/setup.sh` runs `expand` on each model folder. The expanded file is checked against the
sha256 that the folder's manifest.json lists for it, so the runtime loads the very bytes that were evaluated, and a
truncated or tampered archive is refused. Standard library only: setup runs it before any virtual environment.

    python3 training/common/packed.py expand models/classifier   # idempotent: skips files that already match
    python3 training/common/packed.py pack models/classifier/model.gguf
"""
import argparse
import json
import lzma
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from training.common.assets import sha256  # noqa: E402  (standard library only, like this file)

SUFFIX = ".xz"
PRESET = 9  # deterministic for a given input: a re-export of the same bytes gives the same archive


def pack(path):
    """Write PATH.xz beside PATH (what git keeps); returns its path."""
    path = Path(path)
    out = path.with_name(path.name + SUFFIX)
    out.write_bytes(lzma.compress(path.read_bytes(), format=lzma.FORMAT_XZ, preset=PRESET))
    return out


def expand(directory, name, want_sha256):
    """DIRECTORY/NAME from DIRECTORY/NAME.xz when it is missing or its sha256 is not WANT_SHA256. Returns True when
    it wrote the file; exits with a message naming the file when the archive is missing, broken or expands to other
    bytes (nothing is replaced then)."""
    path = Path(directory) / name
    if path.is_file() and sha256(path) == want_sha256:
        return False
    packed = path.with_name(name + SUFFIX)
    if not packed.is_file():
        sys.exit(f"{path}: missing or its sha256 does not match manifest.json, and there is no {packed.name}")
    tmp = path.with_name(name + ".tmp")
    try:
        tmp.write_bytes(lzma.decompress(packed.read_bytes()))
    except lzma.LZMAError as e:
        sys.exit(f"{packed}: not a valid xz file ({e}): tampered or truncated")
    if sha256(tmp) != want_sha256:
        tmp.unlink()
        sys.exit(f"{packed} expanded to a {name} whose sha256 is not the manifest's (tampered or truncated)")
    tmp.replace(path)
    print(f"{path}: expanded from {packed.name} and verified")
    return True


def expand_model_dir(directory):
    """Every file the manifest lists that has a packed form beside it."""
    directory = Path(directory)
    files = json.loads((directory / "manifest.json").read_text())["files"]
    for name, entry in files.items():
        if (directory / (name + SUFFIX)).is_file():
            expand(directory, name, entry["sha256"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("expand").add_argument("dirs", nargs="+", help="model folders (with manifest.json)")
    sub.add_parser("pack").add_argument("files", nargs="+")
    a = ap.parse_args()
    if a.cmd == "expand":
        for d in a.dirs:
            expand_model_dir(d)
    else:
        for f in a.files:
            print(f"{pack(f)}: {Path(f).stat().st_size / 1e6:.1f} MB -> {Path(f + SUFFIX).stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
