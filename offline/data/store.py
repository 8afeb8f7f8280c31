"""Finding dataset files: cache, then mirror, then the canonical download, always verified.

Every file is identified by the sha256 of its *decompressed* content, because the compressed
bytes of the same data differ between mirrors (gzip level and header) while the content does not.
A verified file gets a small stamp beside it so that the next load does not hash it again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm


class DataError(RuntimeError):
    """A dataset file is missing, corrupt or unreadable. The message says what, where and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where it lives under the data dir, its content hash, its homes."""

    path: str  # relative to the data/mirror dir, e.g. "creditcard/creditcard.csv.gz"
    sha256: str  # of the decompressed content
    urls: tuple[str, ...] = ()
    homepage: str = ""

    @property
    def gzipped(self) -> bool:
        return self.path.endswith(".gz")


def content_sha256(path: Path) -> str:
    """sha256 of the file's content, gunzipped on the fly if it is gzip-compressed."""
    digest = hashlib.sha256()
    with open(path, "rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if is_gzip else open
    try:
        with opener(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    except (OSError, EOFError) as exc:  # truncated or damaged gzip stream
        raise DataError(f"{path}: cannot be read ({exc}); the file is damaged, delete it and fetch it again") from exc
    return digest.hexdigest()


@dataclass
class DataStore:
    """Resolves dataset files in the order cache, mirror, canonical download."""

    data_dir: Path = Path("data")
    mirror_dir: Path | None = None
    allow_download: bool = True
    _verified: dict[str, Path] = field(default_factory=dict, repr=False)

    def path(self, file: RemoteFile) -> Path:
        """Local, verified path of ``file``; fetches it into the cache if needed."""
        if file.path in self._verified:
            return self._verified[file.path]
        cached = Path(self.data_dir) / file.path
        if cached.exists():
            self._verify(cached, file)
        elif self.mirror_dir is not None and (Path(self.mirror_dir) / file.path).exists():
            mirrored = Path(self.mirror_dir) / file.path
            self._verify(mirrored, file)
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(cached.suffix + ".part")
            shutil.copyfile(mirrored, tmp)
            tmp.replace(cached)
            self._stamp(cached, file)
        elif self.allow_download and file.urls:
            self._download(file, cached)
        else:
            raise DataError(self._missing_message(file, cached, reason="not found"))
        self._verified[file.path] = cached
        return cached

    # -- internals -------------------------------------------------------------------------
    def _stamp_path(self, path: Path) -> Path:
        return path.with_name(path.name + ".verified.json")

    def _stamp(self, path: Path, file: RemoteFile) -> None:
        st = path.stat()
        stamp = {"sha256": file.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        try:
            self._stamp_path(path).write_text(json.dumps(stamp))
        except OSError:
            pass  # a read-only mirror cannot hold stamps; we simply hash again next time

    def _verify(self, path: Path, file: RemoteFile) -> None:
        stamp_path = self._stamp_path(path)
        if stamp_path.exists():
            try:
                stamp = json.loads(stamp_path.read_text())
                st = path.stat()
                if stamp == {"sha256": file.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}:
                    return
            except (OSError, ValueError):
                pass
        actual = content_sha256(path)
        if actual != file.sha256:
            raise DataError(
                f"{path}: content sha256 is {actual}, expected {file.sha256}. The file is corrupt or a "
                f"different release. Delete it and fetch it again from {self._homes(file)}"
                + (f", or check the mirror {self.mirror_dir}" if self.mirror_dir else "")
                + "."
            )
        self._stamp(path, file)

    def _download(self, file: RemoteFile, target: Path) -> None:
        errors = []
        target.parent.mkdir(parents=True, exist_ok=True)
        for url in file.urls:
            try:
                with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
                    tmp_path = Path(tmp.name)
                    with urllib.request.urlopen(url, timeout=60) as response:
                        total = int(response.headers.get("Content-Length") or 0) or None
                        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {file.path}") as bar:
                            for chunk in iter(lambda: response.read(1 << 20), b""):
                                tmp.write(chunk)
                                bar.update(len(chunk))
                if file.gzipped and not url.endswith(".gz"):  # plain download stored compressed
                    packed = tmp_path.with_suffix(".gz.part")
                    with open(tmp_path, "rb") as src, gzip.open(packed, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    tmp_path.unlink()
                    tmp_path = packed
                actual = content_sha256(tmp_path)
                if actual != file.sha256:
                    tmp_path.unlink(missing_ok=True)
                    errors.append(f"{url}: content sha256 {actual} != expected {file.sha256}")
                    continue
                tmp_path.replace(target)
                self._stamp(target, file)
                return
            except OSError as exc:  # URLError is an OSError
                errors.append(f"{url}: {exc}")
                if "tmp_path" in locals():
                    tmp_path.unlink(missing_ok=True)
        raise DataError(self._missing_message(file, target, reason="download failed: " + "; ".join(errors)))

    def _homes(self, file: RemoteFile) -> str:
        homes = list(file.urls) + ([file.homepage] if file.homepage else [])
        return " or ".join(homes) if homes else "its canonical home"

    def _missing_message(self, file: RemoteFile, cached: Path, reason: str) -> str:
        where = f"cache {cached}" + (f", mirror {Path(self.mirror_dir) / file.path}" if self.mirror_dir else "")
        return (
            f"dataset file {file.path} ({reason}; looked in {where}). Expected content sha256 "
            f"{file.sha256}. Get it from {self._homes(file)} and place it at {cached}, or point "
            f"STREAMDETECT_DATA__MIRROR_DIR at a directory holding {file.path}."
        )
