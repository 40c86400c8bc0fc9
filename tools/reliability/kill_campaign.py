#!/usr/bin/env python3
"""kill -9 campaign for `ganpo train` (issue 26): interrupt a run at random moments, resume it,
and check that nothing is lost.

One uninterrupted run is the reference. Each trial starts the same run in a fresh directory,
kills it with SIGKILL after a random delay, or (every other kill) the moment a checkpoint is
being written or rotated (repeatedly, up to --kills times, resuming in between
with `--resume DIR`), then lets it finish. After every kill it checks that each `checkpoint-STEP`
directory is whole (its `trainer_state.json` parses and every file matches the SHA-256 it
records); at the end, that the final model's files and `metrics.jsonl` equal the reference's
byte for byte. Kills that landed while a checkpoint was being written or rotated are counted
(a hidden `.checkpoint-*.partial-*` or `.deleting-*` directory was left behind).

Usage: python3 tools/reliability/kill_campaign.py --ganpo target/release/ganpo --trials 20
Standard library only; runs on the fixture model in ganpo-train/tests/fixtures.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "ganpo-train/tests/fixtures"


def config(steps: int) -> str:
    data = ", ".join(
        json.dumps(str(FIXTURES / f"data/{n}.jsonl")) for n in ["standard", "implicit"]
    )
    return f"""[model]
path = {json.dumps(str(FIXTURES / "policy"))}

[data]
train = [{data}]
eval_fraction = 0.2

[loss]
beta = 0.5

[ganpo]
discriminator = {{ kind = "transformer", hidden = 32, layers = 1, heads = 2, ff = 64 }}

[train]
output_dir = "out"
lr = 3e-3
batch_size = 4
max_steps = {steps}
logging_steps = 3
save_steps = 2
save_total_limit = 2
"""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def whole(ckpt: Path) -> str | None:
    """None if the checkpoint is whole, else what is wrong."""
    try:
        meta = json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        return f"trainer_state.json: {e}"
    sums = meta.get("checksums") or {}
    if not sums:
        return "no checksums recorded"
    for name, want in sums.items():
        p = ckpt / name
        if not p.is_file():
            return f"{name} missing"
        if sha256(p) != want:
            return f"{name} differs from its SHA-256"
    return None


def writing(out: Path) -> bool:
    """Whether a checkpoint is being written or deleted in `out` right now."""
    try:
        return any(
            n.startswith(".checkpoint-") and (".partial-" in n or ".deleting-" in n)
            for n in os.listdir(out)
        )
    except OSError:
        return False


def run(ganpo: str, work: Path, resume: bool, kill_after: float | None, targeted=False):
    """Runs `ganpo train` in `work`, killing it after `kill_after` seconds (or, `targeted`, as
    soon as a checkpoint is being written or rotated, within that time); returns
    (killed, returncode)."""
    args = [ganpo, "train", "--config", "run.toml"]
    if resume:
        args += ["--resume", "out"]
    env = dict(os.environ, RUST_LOG="warn")
    p = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after is None:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"run in {work} failed:\n{err.decode()}")
        return False, 0
    if targeted:
        deadline = time.monotonic() + kill_after
        while p.poll() is None and time.monotonic() < deadline:
            if writing(work / "out"):
                p.send_signal(signal.SIGKILL)
                p.wait()
                return True, -9
        if p.poll() is not None:
            return False, p.returncode
    try:
        p.wait(timeout=kill_after)
        return False, p.returncode
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return True, -9


def final_files(out: Path) -> dict:
    final = out / "final"
    return {p.name: sha256(p) for p in sorted(final.iterdir()) if p.is_file()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ganpo", default=str(ROOT / "target/release/ganpo"))
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--kills", type=int, default=3, help="kills per trial at most")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    top = Path(tempfile.mkdtemp(prefix="ganpo-kill-"))
    ref = top / "reference"
    ref.mkdir()
    (ref / "run.toml").write_text(config(a.steps))
    t0 = time.monotonic()
    run(a.ganpo, ref, False, None)
    duration = time.monotonic() - t0
    want_final = final_files(ref / "out")
    want_metrics = (ref / "out/metrics.jsonl").read_bytes()
    print(f"reference run: {duration:.2f} s, {a.steps} steps", flush=True)

    kills = during_write = checkpoints = broken = equal_final = equal_metrics = 0
    for trial in range(a.trials):
        work = top / f"trial-{trial}"
        work.mkdir()
        (work / "run.toml").write_text(config(a.steps))
        started = finished = False
        for k in range(a.kills):
            # Every other kill waits for a checkpoint being written or rotated.
            targeted = (trial + k) % 2 == 1
            delay = rng.uniform(0.05, duration) if not targeted else duration
            killed, code = run(a.ganpo, work, started, delay, targeted)
            if not killed:
                if code != 0:
                    sys.exit(f"trial {trial}: ganpo train exited with {code}")
                finished = True
                break
            kills += 1
            out = work / "out"
            leftovers = [p.name for p in out.glob(".checkpoint-*") if ".partial-" in p.name or ".deleting-" in p.name] if out.exists() else []
            during_write += bool(leftovers)
            for ckpt in out.glob("checkpoint-*") if out.exists() else []:
                checkpoints += 1
                problem = whole(ckpt)
                if problem:
                    broken += 1
                    print(f"trial {trial}: {ckpt.name} is not whole: {problem}", flush=True)
            started = out.exists() and any(out.glob("checkpoint-*"))
            if not started and out.exists():
                shutil.rmtree(out)  # killed before its first checkpoint: start again
        if not finished:
            run(a.ganpo, work, started, None)
        f = final_files(work / "out") == want_final
        m = (work / "out/metrics.jsonl").read_bytes() == want_metrics
        equal_final += f
        equal_metrics += m
        print(f"trial {trial}: final model {'equal' if f else 'DIFFERS'}, metrics {'equal' if m else 'DIFFER'}", flush=True)
    print(
        f"\n{a.trials} trials, {kills} kills ({during_write} while a checkpoint was written or "
        f"rotated); {checkpoints - broken} of {checkpoints} checkpoints whole after a kill; "
        f"final model equal to the uninterrupted run's in {equal_final} of {a.trials}, "
        f"metrics.jsonl in {equal_metrics} of {a.trials}"
    )
    shutil.rmtree(top)
    sys.exit(0 if broken == 0 and equal_final == equal_metrics == a.trials else 1)


if __name__ == "__main__":
    main()
