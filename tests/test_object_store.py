"""Run directories, evaluator inputs and outputs in an object store, against a real S3 server on localhost.

The server is moto's (a test dependency), started once for the module; every subprocess finds it through the
standard AWS_ENDPOINT_URL variable with dummy credentials, as a real deployment would find its store. The sampler's
checks mirror tests/test_sampling_e2e.py: two ranks in a bucket give the bytes of one local process; a run killed
mid-way resumes in the bucket, never rewriting a verified shard and quarantining a damaged one. Tests without the
server cover what needs no network: path parsing, the refusal of unusable URLs, the polling schedule, and the
atomic write on fsspec's in-memory store.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from evaluations.evaluator import main as evaluator_main
from guided_diffusion import storage
from guided_diffusion.fileio import atomic_write
from guided_diffusion.storage import ObjectPath, StorageError, UnsupportedLocation, files, location, move
from reproduce.driver import reproduce
from reproduce.report import write_report
from reproduce.tables import load_table
from sampling.config import compose_config
from sampling.dist import RankInfo
from sampling.errors import SamplingError
from sampling.models import checkpoint_path
from sampling.runner import REMOTE_MAX_POLL_S, Layout, Run, next_poll, run
from training.data import export_reference_batch

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "scripts" / "sample.py"
FEATURES = ROOT / "data" / "demo" / "digits_features.pt"
BUCKET = "pag-adm-test"
MERGED = "samples_8x32x32x3.npz"
SLOW = ["sampler.timestep_respacing=ddim12", "batch_size=2"]  # 4 shards, slow enough to kill between them
LAUNCHER_PREFIXES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_", "PMI_", "PMIX_", "MPI_LOCAL", "SLURM_", "HYDI_",
                     "AWS_")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
NO_CONFIG = {"AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull,
             "AWS_EC2_METADATA_DISABLED": "true"}  # no credentials from files or the instance metadata service


def _forget_filesystems() -> None:
    """Drop cached S3 clients, so the next one reads the environment as it is now."""
    storage._FILESYSTEMS.clear()
    try:
        import s3fs
    except ImportError:
        return
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def endpoint():
    """An S3 server on localhost with one bucket; this process and its children reach it with dummy credentials."""
    try:
        import s3fs  # noqa: F401  (the s3:// back-end under test)
        from moto.server import ThreadedMotoServer
    except ImportError as err:
        pytest.skip(f"the S3 test server cannot start: {err} (pip install -e '.[test]' brings moto[server], s3fs)")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one line per request in the test report
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        server.start()
        host, port = server.get_host_and_port()
    except Exception as err:  # noqa: BLE001  (any failure to bind or start is a reason to skip, and is shown)
        pytest.skip(f"the S3 test server cannot start: {type(err).__name__}: {err}")
    url = f"http://{host}:{port}"
    saved = {key: os.environ.get(key) for key in (*CREDENTIALS, *NO_CONFIG, "AWS_ENDPOINT_URL")}
    os.environ.update({**CREDENTIALS, **NO_CONFIG, "AWS_ENDPOINT_URL": url})
    _forget_filesystems()
    storage.filesystem("s3").mkdir(BUCKET)
    yield url
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _forget_filesystems()


def child_env(endpoint: str, credentials: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    env.update({**NO_CONFIG, "AWS_ENDPOINT_URL": endpoint, "OMP_NUM_THREADS": "1"})
    return {**env, **CREDENTIALS} if credentials else env


def smoke(out_dir: str | Path, *overrides: str) -> list[str]:
    return ["+exp=smoke", f"out_dir={out_dir}", "progress=false", *SLOW, *overrides]


def sample_cli(args: list[str], env: dict[str, str], prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or [sys.executable]), str(SAMPLE), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=240, check=False)


def objects(prefix: str) -> list[str]:
    """Every key under s3://BUCKET/prefix, relative to it."""
    found = storage.filesystem("s3").find(f"{BUCKET}/{prefix}")
    return sorted(key.removeprefix(f"{BUCKET}/{prefix}/") for key in found)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> bytes:
    """The merged file of the same settings sampled locally in one process."""
    out = tmp_path_factory.mktemp("local")
    path = run(compose_config(smoke(out)), RankInfo(0, 1, 0, "single"), poll_s=0.05)
    return path.read_bytes()


# ------------------------------------------------------------------------------------------------ with the server
def test_two_ranks_in_a_bucket_match_a_local_run(endpoint, reference):
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if mpiexec is None:
        pytest.fail("mpiexec not found: install the test extras (pip install -e '.[test]' brings mpich)")
    url = f"s3://{BUCKET}/two-ranks"
    result = sample_cli(smoke(url), child_env(endpoint), prefix=[mpiexec, "-n", "2", sys.executable])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"{url}/{MERGED}"
    assert location(f"{url}/{MERGED}").read_bytes() == reference
    assert objects("two-ranks") == ["logs/rank0.log", "logs/rank1.log", "manifest.json", MERGED,
                                    *(f"shards/{a:07d}-{a + 2:07d}.npz" for a in range(0, 8, 2))]
    manifest = json.loads(location(f"{url}/manifest.json").read_text())
    assert [r["world_size"] for r in manifest["runs"]] == [2] and manifest["config"]["out_dir"] == url
    assert "computed 4 samples on this rank" in location(f"{url}/logs/rank1.log").read_text()


def test_a_run_killed_in_a_bucket_resumes_identically(endpoint, reference):
    url = f"s3://{BUCKET}/killed"
    shard_dir = location(f"{url}/shards")
    proc = subprocess.Popen([sys.executable, str(SAMPLE), *smoke(url)], env=child_env(endpoint), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 180
    while not files(shard_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {path.name: path.stat().st_mtime for path in files(shard_dir)}
    assert kept and not objects("killed").count(MERGED), "the run finished before it could be killed"
    time.sleep(1.1)  # object times have 1 s resolution: a rewritten shard would show a later time
    damaged = shard_dir / "0000006-0000008.npz"
    damaged.write_bytes(b"PK\x03\x04 not a whole npz")  # a partial object: quarantined, never trusted
    kept.pop(damaged.name, None)

    result = sample_cli(smoke(url), child_env(endpoint))
    assert result.returncode == 0, result.stderr[-3000:]
    assert location(f"{url}/{MERGED}").read_bytes() == reference
    assert {name: (shard_dir / name).stat().st_mtime for name in kept} == kept, "a verified shard was rewritten"
    quarantined = [key for key in objects("killed") if key.startswith("shards/corrupt/")]
    assert len(quarantined) == 1 and quarantined[0].startswith("shards/corrupt/0000006-0000008.npz.")
    assert "moved to s3://" in location(f"{url}/logs/rank0.log").read_text()


def test_rank_zero_reads_failure_files_in_the_bucket_and_ignores_stale_ones(endpoint):
    url = f"s3://{BUCKET}/failed"
    marker = location(f"{url}/logs/rank1.error")
    marker.write_text("SamplingError: from an earlier launch\n")
    time.sleep(2.1)  # older than the next launch by more than the 1 s slack and the 1 s object time resolution
    job = Run(compose_config(smoke(url, "wait_timeout_s=0.3")), RankInfo(0, 2, 0, "test"), poll_s=0.01)
    job.prepare()
    with pytest.raises(SamplingError, match=r"no new shard for 0 s .*rank\(s\) \[0, 1\]"):
        job.wait_for_shards(None)
    marker.write_text("SamplingError: cannot write shards (quota)\n")
    with pytest.raises(SamplingError, match=r"rank 1: SamplingError: cannot write shards \(quota\); fix that"):
        job.wait_for_shards(None)


def test_checkpoints_in_a_bucket_are_copied_once_into_the_local_cache(endpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("PAG_ADM_CACHE", str(tmp_path))
    remote = location(f"s3://{BUCKET}/models/mine.pt")
    remote.write_bytes(b"first")
    local = checkpoint_path("mine", f"s3://{BUCKET}/models")
    assert local == tmp_path / "objects" / "s3" / BUCKET / "models" / "mine.pt" and local.read_bytes() == b"first"
    local.write_bytes(b"tampered")  # the object did not change: the copy is not fetched again
    assert checkpoint_path("mine", f"s3://{BUCKET}/models").read_bytes() == b"tampered"
    time.sleep(1.1)  # object times have 1 s resolution
    remote.write_bytes(b"second!")
    assert checkpoint_path("mine", f"s3://{BUCKET}/models").read_bytes() == b"second!"
    with pytest.raises(SamplingError, match=rf"checkpoint s3://{BUCKET}/models/other.pt not found; .* set "
                                            r"paths.checkpoints=DIR"):
        checkpoint_path("other", f"s3://{BUCKET}/models")


def test_evaluator_reads_both_batches_from_the_bucket_and_writes_its_json_there(endpoint, reference, capsys):
    url = f"s3://{BUCKET}/evaluation"
    location(f"{url}/ref.npz").write_bytes(reference)
    location(f"{url}/sample.npz").write_bytes(reference)
    evaluator_main([f"{url}/ref.npz", f"{url}/sample.npz", "--backend", "digits", "--device", "cpu",
                    "--bootstrap", "0", "--json", f"{url}/out/metrics.json"])
    printed = capsys.readouterr().out
    results = json.loads(location(f"{url}/out/metrics.json").read_text())
    assert results["ref"] == f"{url}/ref.npz" and results["sample"] == f"{url}/sample.npz"
    assert results["num_samples"] == 8 and abs(results["fid"]) < 1e-3  # a batch against itself
    assert f"FID: {results['fid']}" in printed


def test_a_missing_bucket_is_one_sentence(endpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SamplingError) as caught:  # scripts/sample.py prints it as one line (tests/test_bad_inputs.py)
        run(compose_config(smoke("s3://no-such-bucket-here/run")), RankInfo(0, 1, 0, "single"))
    assert str(caught.value) == (
        "cannot write the run directory in s3://no-such-bucket-here/run: bucket s3://no-such-bucket-here does not "
        "exist (or these credentials cannot see it); create it or choose another path")
    assert list(tmp_path.iterdir()) == []  # no local folder named s3:


def test_missing_credentials_are_one_sentence(endpoint, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "evaluations.evaluator", f"s3://{BUCKET}/evaluation/ref.npz",
         f"s3://{BUCKET}/evaluation/sample.npz"],
        env=child_env(endpoint, credentials=False), cwd=ROOT, capture_output=True, text=True, timeout=120,
        check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line, = result.stderr.strip().splitlines()
    assert "no usable credentials" in line and "AWS_ACCESS_KEY_ID" in line


def test_reproduction_driver_keeps_its_run_directories_in_the_bucket(endpoint, tmp_path):
    if not FEATURES.is_file():
        pytest.skip("the demo feature network is not trained (make train-demo)")
    export_reference_batch(tmp_path / "digits32_ref.npz")
    table = load_table("smoke")
    table = dataclasses.replace(table, overrides=(*table.overrides, f"paths.ref_batches={tmp_path}"),
                                bootstrap=dataclasses.replace(table.bootstrap, resamples=20))
    root = location(f"s3://{BUCKET}/tables")
    samples = reproduce(table, root, num_samples=4)
    assert {name: str(path) for name, path in samples.items()} == {
        row.name: f"{root}/smoke/{row.name}/samples_4x32x32x3.npz" for row in table.rows}
    md, _ = write_report(table, root, tmp_path / "report" / "smoke", "test")
    assert f"`{root}/smoke`" in md.read_text() and "not evaluated" not in md.read_text()
    stamps = {key: (root / key).stat().st_mtime for key in objects("tables")}
    assert {"smoke/smoke_pag/metrics.json", "smoke/smoke_pag/features.npz", "smoke/paired.json"} <= set(stamps)
    time.sleep(1.1)  # object times have 1 s resolution
    reproduce(table, root, num_samples=4)  # everything is done: nothing is sampled or evaluated again
    write_report(table, root, tmp_path / "report" / "smoke", "test")  # paired differences come from the cache
    assert {key: (root / key).stat().st_mtime for key in objects("tables")} == stamps


# ------------------------------------------------------------------------------------------------ no server needed
def test_local_paths_stay_paths_and_urls_keep_their_double_slash(tmp_path):
    assert location(str(tmp_path / "a")) == tmp_path / "a" and isinstance(location(tmp_path), Path)
    assert location("C:/runs/x") == Path("C:/runs/x")  # a drive letter is not a scheme
    remote = location("memory://bucket/run/")
    assert remote == ObjectPath("memory", "bucket/run") and str(remote / "shards" / "a.npz") == (
        "memory://bucket/run/shards/a.npz")
    assert remote.parent == ObjectPath("memory", "bucket") and (remote / "x.npz").with_name("y.json").name == "y.json"


@pytest.mark.parametrize(("url", "says"), [("nosuch://bucket/run", "not a storage scheme fsspec knows"),
                                           ("memory://", "names no bucket")])
def test_unusable_urls_are_refused_with_a_sentence(tmp_path, monkeypatch, url, says):
    with pytest.raises(UnsupportedLocation, match=says):
        location(url)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SamplingError, match=f"out_dir={url}: .*{says}"):
        Layout.of(url)
    assert list(tmp_path.iterdir()) == []  # no local folder named after the scheme


def test_a_hydra_sweep_into_a_store_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["sample.py", "-m", "+exp=smoke", "out_dir=s3://bucket/sweep", "seed=0,1"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(SAMPLE), run_name="__main__")
    assert exited.value.code == 2 and "cannot sweep in an object store" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_scheme_without_its_back_end_names_the_extra(monkeypatch):
    import fsspec

    def missing(protocol):
        raise ImportError(f"Install {protocol}fs to access {protocol}")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    monkeypatch.setattr(storage, "_FILESYSTEMS", {})
    with pytest.raises(UnsupportedLocation, match=r"gs:// paths need the gcsfs package: pip install 'pag-adm\[gcs\]'"):
        location("gs://bucket/run")


def test_rank0_backs_off_while_a_store_shows_no_new_shard():
    delays, delay = [], 2.0
    for changed in [False] * 6 + [True, False]:
        delay = next_poll(delay, changed, 2.0, remote=True)
        delays.append(delay)
    assert delays == [4.0, 8.0, 16.0, REMOTE_MAX_POLL_S, REMOTE_MAX_POLL_S, REMOTE_MAX_POLL_S, 2.0, 4.0]
    assert {next_poll(2.0, changed, 2.0, remote=False) for changed in (False, True)} == {2.0}


def test_an_object_appears_whole_or_not_at_all():
    target = location("memory://atomic/run/shard.npz")

    def fails(fh):
        fh.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, fails)
    assert not target.exists() and files(target.parent) == []
    atomic_write(target, lambda fh: np.savez(fh, a=np.arange(3)))
    with target.open("rb") as fh, np.load(fh) as npz:
        assert npz["a"].tolist() == [0, 1, 2]
    move(target, target.parent / "corrupt" / "shard.npz.1")
    assert files(target.parent) == [] and files(target.parent / "corrupt") == [target.parent / "corrupt/shard.npz.1"]
    with pytest.raises(FileNotFoundError):
        move(target, target.parent / "again")  # another rank moved it first


def test_store_errors_are_sentences_not_tracebacks():
    path = ObjectPath("s3", "bucket/key")

    class NoCredentialsError(Exception):
        pass

    for err, says in ((NoCredentialsError("Unable to locate credentials"), "no usable credentials for s3://bucket"),
                      (PermissionError("Access Denied"), "access to s3://bucket/key was denied"),
                      (ConnectionError("refused"), "cannot reach the s3:// endpoint")):
        with pytest.raises(StorageError, match=says) as caught:
            with storage.translated(path):
                raise err
        assert str(caught.value).startswith(says.split(" for")[0]) and "[Errno" not in str(caught.value)
