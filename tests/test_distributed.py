"""torchrun on the CPU (gloo, 2 processes): N ranks equal one process, and failures end in one line, not a hang.

Starting processes that import torch is the expensive part (seconds each on a busy CI machine), so a single
``torchrun --nproc_per_node 2`` launch runs every distributed CLI command of this file in turn (the WORKER below
calls ``minidiffusion.cli.main`` as ``torchrun -m minidiffusion`` would); the tests then compare what it wrote
with one-process runs made here.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from minidiffusion import distributed
from minidiffusion.checkpoint import load_checkpoint
from minidiffusion.cli import launch, main
from minidiffusion.cli.launch import free_port
from minidiffusion.errors import UserError
from minidiffusion.training import train
from tests.helpers import make_folder, tiny_config
from tests.test_conditional import make_classes

TORCHRUN = Path(sys.executable).with_name("torchrun")

# Runs on every rank: each job is one CLI command (argv, optionally per rank, and environment additions); what
# each returned and printed on stderr goes to rankR.json. Logging goes to the real stderr (torchrun's output).
# Each job meets at its own MASTER_PORT, as separate processes would: a second process group in one process
# could read the first one's stale addresses from torchrun's store.
WORKER = '''
import contextlib, faulthandler, io, json, logging, os, sys, time
from pathlib import Path

faulthandler.dump_traceback_later(240, exit=True)  # a hang shows where, and ends
rank = int(os.environ["RANK"])
logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s", stream=sys.stderr)
from minidiffusion import distributed
from minidiffusion.cli import main

jobs, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
results = []
for k, job in enumerate(jobs):
    os.environ.update(job.get("env", {}))
    err, start = io.StringIO(), time.perf_counter()
    with contextlib.redirect_stderr(err):
        code = main(job["argv"][rank] if job.get("per_rank") else job["argv"])
    results.append({"code": code, "stderr": err.getvalue(), "seconds": time.perf_counter() - start})
    if k < len(jobs) - 1:
        distributed.shutdown()  # as a process's exit would: the next command joins afresh
(out / f"rank{rank}.json").write_text(json.dumps(results))
if rank != 0:  # a hung rank rather than a dead one (rank 0 must time out on its own): wait for rank 0 to finish
    deadline = time.time() + 120
    while not (out / "rank0.json").exists() and time.time() < deadline:
        time.sleep(0.1)
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One-process runs made here, and the same commands under ``torchrun --nproc_per_node 2``."""
    tmp = tmp_path_factory.mktemp("ddp")
    folder = make_folder(tmp / "data")
    cfg = tiny_config(folder)  # global batch 4 (2 per rank), 6 steps, checkpoints at 3 and 6, flips, no dropout
    config = tmp / "tiny.toml"
    config.write_text(cfg.to_toml())
    one = tmp / "one"
    train(cfg, one, progress=False)
    # a 1-process run stopped after step 3, for 2 ranks to finish
    shutil.copytree(one, tmp / "resumed")
    for suffix in (".json", ".safetensors"):
        (tmp / "resumed" / "checkpoints" / f"ckpt_00000006{suffix}").unlink()

    # a class-conditional run (labels indexed on the device, their dropout drawn for the global batch)
    cond_cfg = tiny_config(make_classes(tmp / "classes"), data={"conditional": True}, train={"label_dropout": 0.5})
    cond_config = tmp / "cond.toml"
    cond_config.write_text(cond_cfg.to_toml())
    train(cond_cfg, tmp / "one_cond", progress=False)

    def sample(n: int, out: str) -> list[str]:
        return ["sample", "--checkpoint", str(one), "--n", str(n), "--steps", "2", "--batch-size", "2",
                "--out", str(tmp / out), "--no-progress"]

    jobs = [
        {"argv": ["train", "--config", str(config), "--out", str(tmp / "two"), "--no-progress"]},
        {"argv": ["train", "--config", str(config), "--out", str(tmp / "resumed"), "--resume", "--no-progress"]},
        {"argv": ["train", "--config", str(cond_config), "--out", str(tmp / "two_cond"), "--no-progress"]},
        {"argv": sample(5, "two.npz")},  # 2 + 3 images
        {"argv": sample(1, "two_n1.npz")},  # rank 0 draws none
        {"argv": ["train", "--config", str(config), "--out", str(tmp / "two"), "--no-progress"]},  # no --resume
        {"argv": ["train", "--config", str(config), "--out", str(tmp / "odd"), "--set", "train.batch_size=5"]},
        # rank 1 fails on its own after joining; rank 0 samples, then waits for it in vain until the timeout
        {"argv": [sample(2, "never.npz"), sample(2, "never.npz") + ["--set", "sample.bogus=1"]], "per_rank": True,
         "env": {distributed.TIMEOUT_ENV: "5"}},
    ]
    for job in jobs:
        job["env"] = {**job.get("env", {}), "MASTER_PORT": str(free_port()), "TORCHELASTIC_USE_AGENT_STORE": "False"}
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    (tmp / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINIDIFFUSION_OFFLINE": "1"}
    launch = run_group([str(TORCHRUN), "--nproc_per_node", "2", "--standalone", str(tmp / "worker.py"),
                        str(tmp / "jobs.json"), str(tmp)], env=env, timeout=300)
    assert launch.returncode == 0, launch.stdout + launch.stderr
    ranks = [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]
    names = ["train", "resume", "train_cond", "sample", "sample_n1", "refuse", "odd_batch", "rank_fails"]
    return {"tmp": tmp, "one": one, "log": launch.stdout + launch.stderr,
            "jobs": {name: (ranks[0][k], ranks[1][k]) for k, name in enumerate(names)}}


def run_group(args: list[str], *, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run that, on timeout, kills torchrun's workers too (they would outlive it otherwise)."""
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            pytest.fail(f"torchrun did not finish in {timeout} s:\n{out}{err}")
    return subprocess.CompletedProcess(args, p.returncode, out, err)


# Two ranks average two half-batch gradients where one process averages the whole batch: the sums round
# differently (~1e-7 relative), and Adam, which divides by sqrt(v), turns that into weight differences up to ~3e-6
# where a gradient is nearly zero. A real mistake (a wrong shard, unaveraged gradients) moves weights by ~lr = 1e-3.
ATOL = 1e-5


def assert_same_checkpoint(a, b, atol=ATOL):
    assert a.step == b.step and a.tensors.keys() == b.tensors.keys()
    for key in a.tensors:  # model, EMA and optimizer state
        torch.testing.assert_close(b.tensors[key], a.tensors[key], atol=atol, rtol=0, msg=key)


def test_two_ranks_of_batch_b_train_like_one_process_of_batch_2b(runs):
    rank0, rank1 = runs["jobs"]["train"]
    assert rank0["code"] == rank1["code"] == 0, rank0["stderr"] + rank1["stderr"]
    for step in (3, 6):
        a = load_checkpoint(runs["one"] / "checkpoints" / f"ckpt_{step:08d}.json")
        b = load_checkpoint(runs["tmp"] / "two" / "checkpoints" / f"ckpt_{step:08d}.json")
        assert_same_checkpoint(a, b)
    weight = lambda step: load_checkpoint(runs["one"] / "checkpoints" / f"ckpt_{step:08d}.json").tensors[
        "model.conv_out.weight"]
    assert (weight(6) - weight(3)).abs().max() > 30 * ATOL  # steps 4..6 moved the weights far more than that
    # the logged loss covers the global batch, as in one process
    read = lambda run: [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    one, two = read(runs["one"]), read(runs["tmp"] / "two")
    assert [r["step"] for r in two] == [r["step"] for r in one] == [2, 4, 6]
    for r1, r2 in zip(one, two):
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-5)
    assert "global batch 4 (2 x 2 ranks)" in runs["log"]
    assert "hold different weights" not in runs["log"]  # the per-checkpoint check that EMA & co. agree


def test_two_ranks_train_a_conditional_run_like_one_process(runs):
    rank0, rank1 = runs["jobs"]["train_cond"]
    assert rank0["code"] == rank1["code"] == 0, rank0["stderr"] + rank1["stderr"]
    for step in (3, 6):
        a = load_checkpoint(runs["tmp"] / "one_cond" / "checkpoints" / f"ckpt_{step:08d}.json")
        b = load_checkpoint(runs["tmp"] / "two_cond" / "checkpoints" / f"ckpt_{step:08d}.json")
        assert a.classes == b.classes == ("cat", "dog", "eel")
        assert_same_checkpoint(a, b)


def test_two_ranks_resume_a_one_process_run_and_vice_versa(runs, tmp_path):
    rank0, rank1 = runs["jobs"]["resume"]
    assert rank0["code"] == rank1["code"] == 0, rank0["stderr"] + rank1["stderr"]
    full = load_checkpoint(runs["one"])
    assert_same_checkpoint(full, load_checkpoint(runs["tmp"] / "resumed"))
    # and one process finishes what two ranks started
    shutil.copytree(runs["tmp"] / "two", tmp_path / "cut")
    for suffix in (".json", ".safetensors"):
        (tmp_path / "cut" / "checkpoints" / f"ckpt_00000006{suffix}").unlink()
    train(load_checkpoint(runs["one"]).config, tmp_path / "cut", resume=True, progress=False)
    assert_same_checkpoint(full, load_checkpoint(tmp_path / "cut"))


@pytest.mark.parametrize("n, name", [(5, "sample"), (1, "sample_n1")])
def test_sampling_on_two_ranks_gives_the_images_of_one(runs, n, name):
    rank0, rank1 = runs["jobs"][name]
    assert rank0["code"] == rank1["code"] == 0, rank0["stderr"] + rank1["stderr"]
    out = runs["tmp"] / f"{name}_one.npz"
    assert main(["sample", "--checkpoint", str(runs["one"]), "--n", str(n), "--steps", "2", "--batch-size", "2",
                 "--out", str(out), "--no-progress"]) == 0
    two = np.load(runs["tmp"] / ("two.npz" if n == 5 else "two_n1.npz"))["images"]
    assert two.shape == (n, 8, 8, 1) and np.array_equal(two, np.load(out)["images"])


def test_rank_zero_decides_about_an_existing_run(runs):
    rank0, rank1 = runs["jobs"]["refuse"]
    assert rank0["code"] == rank1["code"] == 2
    assert rank0["stderr"].startswith("error: ") and rank0["stderr"].count("\n") == 1
    assert "already holds checkpoints" in rank0["stderr"]
    assert rank1["stderr"] == ""  # the same error, printed once


def test_batch_not_divisible_by_the_world_size_is_one_line(runs):
    rank0, rank1 = runs["jobs"]["odd_batch"]
    assert rank0["code"] == rank1["code"] == 2
    assert rank0["stderr"].startswith("error: train.batch_size=5 is not divisible by the world size 2")
    assert rank0["stderr"].count("\n") == 1 and rank1["stderr"] == ""


def test_a_failing_rank_says_so_and_the_others_time_out(runs):
    rank0, rank1 = runs["jobs"]["rank_fails"]
    assert rank1["code"] == 2 and rank1["stderr"].startswith("error (rank 1): config: unknown key 'sample.bogus'")
    assert rank1["stderr"].count("\n") == 1
    assert rank0["code"] == 1 and rank0["stderr"].count("\n") == 1, rank0["stderr"]
    assert rank0["stderr"].startswith("error: the distributed run broke") and distributed.TIMEOUT_ENV in rank0["stderr"]
    assert 4 < rank0["seconds"] < 60  # the 5 s timeout, not forever
    assert not (runs["tmp"] / "never.npz").exists()


def test_workers_train_like_one_process(runs, tmp_path):
    """`train --workers 2` starts the two ranks itself: the run equals one process of the same global batch."""
    config, env = runs["tmp"] / "tiny.toml", {**os.environ, "OMP_NUM_THREADS": "1", "MINIDIFFUSION_OFFLINE": "1"}
    command = [sys.executable, "-m", "minidiffusion", "train", "--config", str(config), "--no-progress",
               "--workers", "2"]
    done = run_group([*command, "--out", str(tmp_path / "w")], env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "global batch 4 (2 x 2 ranks)" in done.stderr
    assert_same_checkpoint(load_checkpoint(runs["one"]), load_checkpoint(tmp_path / "w"))


def test_workers_fit_one_schedule_to_the_time_limit(runs, tmp_path):
    """train.fit_time_limit under DDP: rank 0 measures, every rank follows the same fitted length (a rank that
    stopped early would leave the other waiting in its all-reduce)."""
    config, env = runs["tmp"] / "tiny.toml", {**os.environ, "OMP_NUM_THREADS": "1", "MINIDIFFUSION_OFFLINE": "1"}
    command = [sys.executable, "-m", "minidiffusion", "train", "--config", str(config), "--no-progress",
               "--workers", "2", "--out", str(tmp_path / "w"), "--set", "train.steps=100000",
               "--set", "train.time_limit=4", "--set", "train.fit_time_limit=true", "--set", "train.lr_decay=cosine"]
    done = run_group(command, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    fitted = int(re.search(r"train.fit_time_limit: (\d+) of the 100000 steps", done.stderr).group(1))
    final = load_checkpoint(tmp_path / "w")
    assert final.meta["fitted"] == [fitted, 100000]
    assert final.step == fitted or "train.time_limit=4s reached" in done.stderr  # a machine that slowed down


def test_the_first_failing_worker_sets_the_status_and_the_others_are_stopped(monkeypatch, capsys):
    monkeypatch.setattr(launch, "GRACE_S", 0.5)
    python = lambda code: subprocess.Popen([sys.executable, "-c", code])
    sleeper = python("import time; time.sleep(60)")
    assert launch._wait([python("import sys; sys.exit(2)"), sleeper]) == 2
    assert sleeper.returncode is not None  # stopped, not left running
    killed = python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert launch._wait([killed, python("pass")]) == 1
    assert capsys.readouterr().err == "error: a training worker was killed by SIGKILL\n"
    assert launch._wait([python("pass"), python("pass")]) == 0


def test_workers_check_the_config_before_starting_any(tmp_path, capsys):
    assert main(["train", "--config", "quick", "--workers", "2", "--set", "train.bogus=1", "--out",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: quick: unknown key 'train.bogus'") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    assert main(["train", "--workers", "0"]) == 2
    assert capsys.readouterr().err == "error: --workers must be at least 1, got 0\n"


# -- in one process ---------------------------------------------------------------------------------------------------

def test_torchrun_with_one_process_is_the_plain_run(runs, tmp_path, monkeypatch):
    for name, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}.items():  # what torchrun sets
        monkeypatch.setenv(name, value)
    plain = load_checkpoint(runs["one"])
    train(plain.config, tmp_path / "r", progress=False)
    ours = load_checkpoint(tmp_path / "r")
    assert all(torch.equal(plain.tensors[k], ours.tensors[k]) for k in plain.tensors)


@pytest.mark.parametrize("rank, printed", [("0", True), ("2", False)])
def test_batch_check_comes_before_joining_the_group(tmp_path, monkeypatch, capsys, rank, printed):
    # No other rank exists: joining would wait (2 s here). The check must fire first, on every rank alike.
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "2")
    cfg = tiny_config(make_folder(tmp_path / "data", n=4))
    (tmp_path / "c.toml").write_text(cfg.to_toml())
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == ("error: train.batch_size=4 is not divisible by the world size 3 (it is the global batch: each "
                   "rank takes batch_size / world size)\n" if printed else "")


def test_shards_are_contiguous_balanced_and_cover_everything():
    for n in (0, 1, 5, 64, 101):
        for size in (1, 2, 3, 8):
            parts = [distributed.shard(n, distributed.World(r, size, r)) for r in range(size)]
            assert [i for p in parts for i in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_fingerprint_is_exact():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[17] = torch.nextafter(y[17], torch.tensor(float("inf")))  # one ulp
    assert distributed.fingerprint([x]) == distributed.fingerprint([x.clone()])
    assert distributed.fingerprint([x]) != distributed.fingerprint([y])
    assert distributed.fingerprint([x.flip(0)]) == distributed.fingerprint([x])  # order-free: any hardware agrees
    assert len(distributed.fingerprint([x.half(), torch.arange(3), x.double()])) == 3


def test_single_process_helpers_are_plain_calls():
    world = distributed.World()
    x = torch.arange(6).reshape(3, 2)
    assert distributed.gather_rows(x, world) is x and distributed.all_sum(x, world) is x
    assert distributed.on_main(lambda: 7, world) == 7 and distributed.main_first(lambda: 8, world) == 8
    with pytest.raises(UserError, match="boom"):
        distributed.agreed(lambda: (_ for _ in ()).throw(UserError("boom")), world)
    assert distributed.local_device("cuda", world) == "cuda"
    assert distributed.local_device("cuda", distributed.World(3, 4, 1)) == "cuda:1"
    assert distributed.local_device("cuda:1", world) == "cuda:1" and distributed.local_device("cpu", world) == "cpu"
    with pytest.raises(UserError, match="device cuda:1 under torchrun: each rank takes cuda:LOCAL_RANK"):
        distributed.local_device("cuda:1", distributed.World(3, 4, 1))


def test_environment_checks(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(UserError, match="RANK is not"):
        distributed.World.from_env()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.World.from_env() == distributed.World(1, 2, 1)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(UserError, match="seconds"):
        distributed.timeout()
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "90")
    assert distributed.timeout() == timedelta(seconds=90)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie nobody reaps has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_ends_with_its_launcher_even_when_that_is_killed_outright():
    """kill -9 of the launcher cannot be passed on by it: each worker asks to end with it (follow_launcher)."""
    worker = ("import time; from minidiffusion.cli.launch import follow_launcher; follow_launcher(); "
              "print('ready', flush=True); time.sleep(60)")
    starter = ("import os, subprocess, sys; "
               f"w = subprocess.Popen([sys.executable, '-c', {worker!r}], "
               f"env={{**os.environ, {launch.LAUNCHER_ENV!r}: str(os.getpid())}}); "
               "print(w.pid, flush=True); w.wait()")
    fake_launcher = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    pid = int(fake_launcher.stdout.readline())
    assert fake_launcher.stdout.readline() == "ready\n"
    fake_launcher.kill()
    fake_launcher.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the worker outlived its launcher"


def test_ctrl_c_for_the_launcher_alone_stops_the_workers_and_says_where_to_resume(tmp_path, capsys):
    """SIGINT that reached only the launcher (kill -INT, a wrapper script) is passed on at once, not after the grace
    period, and the launcher says where the run stands."""
    worker = ("import sys, time\nprint('ready', flush=True)\ntry:\n    time.sleep(60)\n"
              "except KeyboardInterrupt:\n    sys.exit(130)")
    procs = [subprocess.Popen([sys.executable, "-c", worker], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    assert all(p.stdout.readline() == "ready\n" for p in procs)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "ckpt_00000012.json").write_text("{}")
    threading.Timer(0.3, signal.raise_signal, (signal.SIGINT,)).start()  # lands in the main thread, in supervise
    started = time.monotonic()
    assert launch.supervise(procs, tmp_path / "run") == 130
    assert time.monotonic() - started < launch.GRACE_S / 2
    assert [p.returncode for p in procs] == [130, 130]  # each stopped by the SIGINT passed on
    assert capsys.readouterr().err == (f"interrupted: continue from step 12 with: minidiffusion train --out "
                                       f"{tmp_path / 'run'} --resume\n")
    assert launch.resume_hint(tmp_path / "elsewhere") == f"no checkpoint was written in {tmp_path / 'elsewhere'} yet"


@pytest.mark.slow
def test_kill_9_of_the_launcher_frees_the_run_for_resume(runs, tmp_path):
    """The whole story: `train --workers 2`, its launcher killed outright mid-run; the workers go with it and the run
    resumes (its lock is free)."""
    config, env = runs["tmp"] / "tiny.toml", {**os.environ, "OMP_NUM_THREADS": "1", "MINIDIFFUSION_OFFLINE": "1"}
    out = tmp_path / "w"
    command = [sys.executable, "-m", "minidiffusion", "train", "--config", str(config), "--no-progress",
               "--workers", "2", "--out", str(out)]
    launcher = subprocess.Popen([*command, "--set", "train.steps=100000", "--set", "train.checkpoint_every=5"],
                                env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "checkpoints").glob("ckpt_*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = [int(line.split()[0]) for line in subprocess.run(["ps", "-o", "pid=", "--ppid", str(launcher.pid)],
                                                               capture_output=True, text=True).stdout.splitlines()]
    assert len(workers) == 2
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 20
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)
    reached = load_checkpoint(out).step
    done = run_group([*command, "--resume", "--set", f"train.steps={reached + 3}"], env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(out).step == reached + 3


def test_only_rank_0_prints_warnings(tmp_path):
    """With --workers 2 a folder's "skipped 1 unreadable image" printed once per rank; now rank 0 speaks for all."""
    make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    argv = ["visualize", "data", "--dataset", "folder", "--set", f"data.root={tmp_path / 'imgs'}", "--set",
            "data.image_size=8", "--n", "2", "--out", str(tmp_path / "grid.png")]
    code = f"import sys; from minidiffusion.cli import main; sys.exit(main({argv!r}))"
    outputs = {}
    for rank in ("0", "1"):
        env = {**os.environ, "RANK": rank, "MINIDIFFUSION_OFFLINE": "1"}
        outputs[rank] = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                       timeout=120).stderr
    assert "skipped 1 unreadable image" in outputs["0"]
    assert "skipped" not in outputs["1"]
