"""A package file: writing it (the compiler), and reading, verifying and unpacking it (the node).

A package (`.apz`) is a zip file:

    manifest.json            what the package holds (:class:`~apz.specs.Manifest`), versioned
    models/<endpoint>.onnx   one ONNX model per prediction endpoint
    datasets/<name>.<ext>    bundled datasets (csv or parquet), typed by the manifest's `schema`
    sqlite/<service>.db      the datasets as one SQLite database (when a sql endpoint uses it)
    code/...                 the service's Python code (function and custom-prediction endpoints)
    folders/<name>/...       managed folders of function and custom-prediction endpoints
    tests/<endpoint>.json    the endpoint's test queries (a JSON list of request bodies)

`manifest.json` lists every other file with its size and sha256; a package whose files do
not match, that holds a file the manifest does not list, whose paths (of its members or in
its manifest) leave the package, or that inflates suspiciously (a zip bomb) is refused
with a :class:`~apz.vocab.PackageError` that says which file and why. The compiler writes
packages with :func:`write_package`; the node verifies and unpacks them with
:func:`extract_package` (pushes and packages given on the command line) and re-validates
the manifest of an unpacked generation with :func:`load_extracted` whenever it loads one.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import orjson

from apz.manifest import parse_manifest
from apz.specs import Manifest
from apz.vocab import FORMAT, FORMAT_VERSION, MANIFEST, MAX_FILES, PackageError, safe_member, sha256_bytes, sha256_file

MAX_UNPACKED_BYTES = 4 * 1024**3
MAX_RATIO = 200  # zip bomb guard: uncompressed/compressed, per member and for the whole package
BOMB_FLOOR = 16 * 1024**2  # ... once the member (or the package) inflates past this
MAX_MANIFEST_BYTES = 16 * 1024**2
# What reading a crafted archive can raise besides BadZipFile: corrupt deflate streams,
# truncated members, unsupported or encrypted compression, nonsense offsets.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


def write_package(out: Path, manifest: dict[str, Any], files: dict[str, bytes | Path]) -> str:
    """Writes a package atomically; fills `manifest["files"]`. Returns the package's sha256."""
    listing: dict[str, dict[str, Any]] = {}
    for name, content in files.items():
        safe_member(name)
        data = content.read_bytes() if isinstance(content, Path) else content
        listing[name] = {"sha256": sha256_bytes(data), "size": len(data)}
    manifest = {**manifest, "files": listing}
    manifest.setdefault("format", FORMAT)
    manifest.setdefault("format_version", FORMAT_VERSION)
    parse_manifest(manifest)  # never write what the node would refuse
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".apz-", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            for name, content in files.items():
                if isinstance(content, Path):
                    z.write(content, name)
                else:
                    z.writestr(name, content)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha256_file(out)


def read_manifest(package: Path | bytes) -> Manifest:
    """Reads and validates the manifest of a package without unpacking it."""
    with _open_zip(io.BytesIO(package) if isinstance(package, bytes) else package) as z:
        return _manifest_of(z)


def _open_zip(package: Path | io.BytesIO) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(package)
    except (*_ZIP_ERRORS, OSError, ValueError) as exc:
        raise PackageError(f"not a package: corrupt zip ({exc})") from exc


def _manifest_of(z: zipfile.ZipFile) -> Manifest:
    try:
        info = z.getinfo(MANIFEST)
    except KeyError:
        raise PackageError("not a package: no manifest.json") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise PackageError(f"manifest.json is larger than {MAX_MANIFEST_BYTES // 1024**2} MiB")
    try:
        raw = z.read(info)
    except _ZIP_ERRORS as exc:
        raise PackageError(f"manifest.json cannot be read: {exc}") from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PackageError(f"manifest.json is not valid JSON: {exc}") from exc
    return parse_manifest(data)


def _check_members(z: zipfile.ZipFile, manifest: Manifest) -> None:
    """Every member of the archive is inside the package and listed; every listed file is
    there with its size; nothing inflates like a zip bomb. From the archive's directory
    alone: nothing is inflated yet."""
    infos = z.infolist()
    if len(infos) > MAX_FILES + 1:
        raise PackageError(f"package holds {len(infos)} files; the limit is {MAX_FILES}")
    for member in infos:
        safe_member(member.filename)
    members = {i.filename: i for i in infos if not i.is_dir()}
    extra = set(members) - set(manifest.files) - {MANIFEST}
    if extra:
        raise PackageError(f"package holds files the manifest does not list: {sorted(extra)[:5]}")
    total = compressed = 0
    for name, meta in manifest.files.items():
        info = members.get(name)
        if info is None:
            raise PackageError(f"package lacks {name}, listed in its manifest")
        if info.file_size != meta.size:
            raise PackageError(f"{name}: size {info.file_size} != {meta.size} in the manifest")
        if info.file_size > BOMB_FLOOR and info.file_size > MAX_RATIO * info.compress_size:
            raise PackageError(
                f"{name}: inflates {info.file_size} bytes from {info.compress_size} "
                f"(more than {MAX_RATIO}x): refused as a zip bomb"
            )
        total += info.file_size
        compressed += info.compress_size
    if total > MAX_UNPACKED_BYTES:
        raise PackageError(f"package unpacks to {total} bytes, over the {MAX_UNPACKED_BYTES} limit")
    if total > BOMB_FLOOR and total > MAX_RATIO * compressed:
        raise PackageError(
            f"package inflates {total} bytes from {compressed} (more than {MAX_RATIO}x): refused as a zip bomb"
        )


def extract_package(package: Path, dest: Path) -> Manifest:
    """Verifies a package and unpacks it into `dest` (created atomically, replaced if present).

    Refuses: corrupt zips, bad manifests, members outside the package or not in the
    manifest, size or sha256 mismatches, and archives that inflate suspiciously (zip bombs).
    """
    with _open_zip(package) as z:
        manifest = _manifest_of(z)
        _check_members(z, manifest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
        try:
            for name, meta in manifest.files.items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                try:
                    # zipfile stops at the declared size, so a member cannot inflate past it
                    with z.open(name) as src, open(target, "wb") as out:
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            h.update(chunk)
                            out.write(chunk)
                except _ZIP_ERRORS as exc:
                    raise PackageError(f"{name}: cannot be unpacked ({exc})") from None
                if h.hexdigest() != meta.sha256.lower():
                    raise PackageError(f"{name}: sha256 mismatch (package corrupted or tampered with)")
            (tmp / MANIFEST).write_bytes(z.read(MANIFEST))
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return manifest


def load_extracted(dest: Path) -> Manifest:
    """The manifest of an unpacked generation, validated again: the data dir is not trusted
    more than an upload."""
    try:
        return parse_manifest(orjson.loads((dest / MANIFEST).read_bytes()))
    except orjson.JSONDecodeError as exc:
        raise PackageError(f"{dest / MANIFEST}: not valid JSON: {exc}") from None
    except PackageError as exc:
        raise PackageError(f"{dest}: {exc}") from None
