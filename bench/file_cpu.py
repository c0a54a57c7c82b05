"""CPU of writing one file through the run storage (`Storage.put`), per folder it is written in.

    .venv/bin/python bench/file_cpu.py                      # the temp folder (TMPDIR, /tmp)
    .venv/bin/python bench/file_cpu.py /tmp /work/bench-tmp # several places, alternated

A chunk writes one new file per invoice: the prepare its `preparees/<n>.pdf`, the send its GED
copy. On ext4 without a journal (no `/proc/fs/jbd2/<device>-8`: the project's test machine) the
kernel picks each new inode by scanning its block group from the start, passing over every free
inode freed lately (fs/ext4/ialloc.c, `find_inode_bit` → `recently_deleted`, only without a
journal; docs/performance-notes.md): a group where other processes keep creating and deleting
files (pytest's temp folders, the benches' clean-up of their previous run, all under /tmp) makes
each file created there cost a look-up per such inode, in the chunk's system CPU. A journalled
ext4, xfs or a remote storage never scans. A new folder stays in its parent's group; under a
folder marked `chattr +T` (ext4's « top directory ») new folders are spread over other groups,
away from that churn: `TMPDIR=<such a folder>` gives a bench's run files what production's
storage has.

For each place, alternated for `--rounds` rounds: a new folder, `--files` files of `--size`
bytes written through `Storage.put` as a chunk writes them. Printed: this process's CPU per
file (getrusage user + system), the median of the rounds, and the place's filesystem."""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
from pathlib import Path

from postier.storage import StorageConfig, open_storage


def filesystem(path: str) -> str:
    """`ext4, journal` / `ext4, sans journal` / `tmpfs`… for the filesystem holding `path`."""
    real = os.path.realpath(path)
    best, kind, device = "", "?", ""
    with open("/proc/mounts") as mounts:
        for line in mounts:
            source, point, fstype = line.split()[:3]
            if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > len(
                best
            ):
                best, kind, device = point, fstype, source
    if kind != "ext4":
        return kind
    name = os.path.basename(os.path.realpath(device))
    journal = os.path.exists(f"/proc/fs/jbd2/{name}-8")
    return f"ext4, {'journal' if journal else 'sans journal'}"


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_files(parent: str, files: int, data: bytes) -> float:
    """CPU seconds per file of `files` files written in a new folder under `parent`."""
    base = tempfile.mkdtemp(prefix="file-cpu-", dir=parent)
    storage = open_storage(StorageConfig(url=base), Path(base))
    try:
        started = cpu()
        for n in range(files):
            storage.put(f"{base}/preparees/F{n:06d}.pdf", data, f"{base}/F{n}")
        return (cpu() - started) / files
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("places", nargs="*", default=[tempfile.gettempdir()])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size", type=int, default=70_000, help="bytes (a signed PDF: ≈ 70 kB)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = os.urandom(args.size)
    samples: dict[str, list[float]] = {p: [] for p in args.places}
    for _ in range(args.rounds):
        for place in args.places:
            samples[place].append(write_files(place, args.files, data))
    print(f"CPU par fichier écrit par Storage.put ({args.files} fichiers de {args.size} octets)")
    print("| dossier | système de fichiers | ms par fichier, médiane | manches |")
    print("|---|---|---:|---|")
    for place, seconds in samples.items():
        rounds = ", ".join(f"{s * 1000:.3f}" for s in seconds)
        print(
            f"| {place} | {filesystem(place)} | {statistics.median(seconds) * 1000:.3f} "
            f"| {rounds} |"
        )


if __name__ == "__main__":
    main()
