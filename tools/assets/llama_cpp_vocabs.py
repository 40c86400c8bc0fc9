#!/usr/bin/env python3
"""Fetches llama.cpp's vocabulary-only GGUF test files from the llama-cpp-python sdist on PyPI.

llama.cpp keeps, for each tokenizer kind it supports, a GGUF holding only the vocabulary
(`models/ggml-vocab-NAME.gguf`) with test texts (`.inp`) and the token ids llama.cpp produces for
them (`.out`). llama-cpp-python vendors llama.cpp, so its sdist carries them; pip cannot download
an sdist without building it, so this reads PyPI's simple index (PEP 503), checks the sha256 it
lists, and extracts only the wanted files.

Usage: python tools/assets/llama_cpp_vocabs.py OUT_DIR NAME...   (NAME: llama-spm, ...)
Writes OUT_DIR/ggml-vocab-NAME.gguf{,.inp,.out}.
"""
import hashlib
import io
import os
import re
import sys
import tarfile
import urllib.request

PACKAGE, VERSION = "llama-cpp-python", "0.3.36"
INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")


def main():
    out, names = sys.argv[1], sys.argv[2:]
    os.makedirs(out, exist_ok=True)
    page = urllib.request.urlopen(f"{INDEX}/{PACKAGE}/").read().decode()
    sdist = f"llama_cpp_python-{VERSION}.tar.gz"
    match = re.search(r'href="([^"]*/' + re.escape(sdist) + r')#sha256=([0-9a-f]{64})"', page)
    if not match:
        sys.exit(f"{sdist} is not listed in {INDEX}/{PACKAGE}/")
    url, sha = match.groups()
    data = urllib.request.urlopen(url).read()
    if hashlib.sha256(data).hexdigest() != sha:
        sys.exit(f"{sdist}: sha256 mismatch")
    wanted = {f"ggml-vocab-{n}.gguf{ext}" for n in names for ext in ("", ".inp", ".out")}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            base = os.path.basename(member.name)
            if base in wanted and "/vendor/llama.cpp/models/" in member.name:
                tmp = os.path.join(out, base + ".partial")
                with open(tmp, "wb") as f:
                    f.write(tar.extractfile(member).read())
                os.replace(tmp, os.path.join(out, base))
                wanted.discard(base)
    if wanted:
        sys.exit(f"{sdist} lacks {sorted(wanted)}")


if __name__ == "__main__":
    main()
