"""What the whole-run benchmarks share: a command run as a user runs it, in a fresh process
(wall time and peak memory), and sections whose results are written as each finishes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def advex(*argv: str, torchrun: int = 0) -> dict:
    """``advex ARGV`` (under ``torchrun --nproc_per_node=N`` if ``torchrun``) in a fresh process:
    its wall time, its peak RSS (the largest of the process and its children) and the tail of
    what it printed; a failure stops the benchmark with that tail."""
    launch = ["-m", "torch.distributed.run", "--nproc_per_node", str(torchrun)] if torchrun else []
    cmd = [sys.executable, *launch, "-m", "advex", *argv]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    head = f"torchrun --nproc_per_node={torchrun} -m advex " if torchrun else "advex "
    shown = " ".join(a if " " not in a else repr(a) for a in argv)
    return {"command": head + shown, "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "stdout_tail": out[-1500:]}  # fmt: skip


def run_sections(sections: dict[str, Callable[[], dict]], only: str, out: Path) -> None:
    """Run the ``only`` (comma-separated) of ``sections``, each result stamped with the machine,
    the load average before it, its seconds and the command, into ``out`` (JSON, one entry a
    section, the others kept) as soon as it finishes."""
    from advex.report import machine

    results = json.loads(out.read_text()) if out.is_file() else {}
    for name in [s.strip() for s in only.split(",") if s.strip()]:
        if name not in sections:
            sys.exit(f"--only: unknown section {name!r}; choose from {', '.join(sections)}")
        load = [round(v, 2) for v in os.getloadavg()]
        t0 = time.perf_counter()
        section = sections[name]()
        section.update(machine=machine(), load_average_before=load, section_s=round(time.perf_counter() - t0, 1),
                       command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))  # fmt: skip
        results[name] = section
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(out)
        print(f"{name}: done in {section['section_s']} s", flush=True)
    print(f"wrote {out}")
