"""albert_jax.plan: the real train step compiled ahead of time for TPU topologies, without a TPU.

Compilations run the command line in a subprocess: libtpu is set up once per process
(plan.setup_host) and must not depend on what the pytest worker's jax has already initialized.
"""

import importlib.util
import os
import subprocess
import sys
import types

import pytest

from albert_jax.train import metrics
from albert_jax.train import partitioning
from albert_jax.plan import planner as plan
from albert_jax.plan import roofline
from albert_jax.plan import tpu_specs
from albert_jax.model.config import ModelConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=configs/pretrain.py:size=tiny", "--config.data.max_seq_length=128",
        "--config.training.global_batch_size=16"]
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu is not installed (pip install -e '.[tpu]')")


def run_plan(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "albert_jax.plan", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)


@needs_libtpu
def test_tiny_config_compiles_for_v5e_and_fits():
  result = run_plan(*TINY, "--topology=v5e:2x2")
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  assert "Plan for v5e:2x2: TPU v5 lite, 4 chips, 4 devices, 1 hosts" in out
  assert "mesh data=4 fsdp=1 tensor=1" in out
  for row in ("parameters", "optimizer state", "batch", "XLA temporaries", "total"):
    assert f"  {row}" in out
  assert "-> FITS: margin" in out
  assert "cost_analysis()" in out and "analytic / XLA" in out
  assert "each loop body counted as often as it runs" in out
  assert "tokens/s" in out and "125000 steps (training.total_steps)" in out
  # The roofline of the compiled step, labelled as the compiler's estimate; the forward and the
  # backward depth scans of the tiny model's 2 layers each counted twice.
  section = out.split("Roofline (the compiler's estimate, not a measurement)\n")[1]
  for row in ("XLA FLOPs", "bytes accessed", "compute-bound", "HBM-bound", "intensity",
              "MFU ceiling"):
    assert f"  {row}" in section, row
  assert "(cost_analysis() of the step, loop bodies counted 2, 2 times)" in section
  assert "819 GB/s per device" in section and "the chip's ridge of 241" in section


@needs_libtpu
def test_huge_batch_does_not_fit_and_a_variant_is_suggested():
  # 512 sequences per v5e chip through a 19k-wide feed-forward layer: activations need more than
  # 16 GiB (about 20), the weights are small.
  result = run_plan("--config=configs/pretrain.py:size=tiny", "--topology=v5e:2x2",
                    "--config.data.max_seq_length=128", "--config.model.intermediate_size=19456",
                    "--config.training.global_batch_size=2048", "--max_variants=2")
  assert result.returncode == 2, result.stderr[-3000:]
  out = result.stdout
  assert "DOES NOT FIT: XLA needs" in out
  # Full FSDP is cheaper but cannot help (the weights are tiny); accumulation over 2 does, with
  # the compiler's estimate.
  tried = out.split("Variants tried, cheapest first")[1].split("\n\n")[0].splitlines()[1:]
  assert len(tried) == 2
  assert tried[0].startswith("  --config.partitioning.mesh.data=1 --config.partitioning.mesh."
                             "fsdp=4  ->  does not fit")
  assert tried[1].startswith("  --config.training.microbatches=2  ->  FITS, total")
  assert "HBM-bound), MFU ceiling" in tried[1]
  chosen = out.split("Variant that fits with the shortest estimated step (ties: the cheapest): "
                     "add\n")[1]
  assert chosen.startswith("  --config.training.microbatches=2\n")
  assert "-> FITS" in chosen and "  MFU ceiling" in chosen


@needs_libtpu
def test_multislice_puts_the_data_axis_across_slices():
  result = run_plan(*TINY, "--topology=v5e:2x2", "--num_slices=2", "--noroofline")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Plan for v5e:2x2 x 2 slices: TPU v5 lite, 8 chips, 8 devices, 2 hosts" in result.stdout
  assert "the data axis spans the slices" in result.stdout
  # No roofline: the step's XLA FLOPs as cost_analysis() counts them, and no roofline.
  assert "(it counts a loop body once)" in result.stdout
  assert "Roofline (the compiler's estimate, not a measurement)\n  not available: off " \
         "(--noroofline)" in result.stdout


@needs_libtpu
def test_training_mesh_keeps_fsdp_inside_a_slice():
  _, devices = plan.topology_devices("v5e:2x2", num_slices=2)
  mesh = partitioning.create_mesh({"data": 2, "fsdp": -1, "tensor": 1}, devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  assert [{d.slice_index for d in mesh.devices[i].flat} for i in range(2)] == [{0}, {1}]


@needs_libtpu
def test_rows_shared_by_processes_are_detected():
  # v5e:4x4: 16 chips on 4 hosts. Pretraining readers need every process to own its rows.
  _, devices = plan.topology_devices("v5e:4x4")
  share = lambda mesh: partitioning.processes_share_rows(
      partitioning.create_mesh(dict({"data": 1, "fsdp": 1, "tensor": 1}, **mesh), devices), 64)
  assert not share({"data": 16}) and not share({"data": 2, "fsdp": 8})
  assert share({"data": 2, "tensor": 8})


def test_multislice_mesh_needs_a_data_axis_per_slice():
  # Checked before any device is touched, so stand-in devices of 2 slices do.
  devices = [types.SimpleNamespace(slice_index=i // 4) for i in range(8)]
  with pytest.raises(ValueError, match=r"'partitioning.mesh': data=1 is not a multiple of the 2 "
                     r"slices"):
    partitioning.create_mesh({"data": 1, "fsdp": -1, "tensor": 1}, devices)


@needs_libtpu
def test_topology_rejected_by_libtpu_is_a_clear_error():
  result = run_plan(*TINY, "--topology=v5e:3x3")
  assert result.returncode == 1
  assert "error: libtpu rejected --topology='v5e:3x3'" in result.stderr
  assert "Traceback" not in result.stderr


def test_missing_libtpu_names_the_install_command(monkeypatch):
  monkeypatch.setitem(sys.modules, "libtpu", None)  # makes `import libtpu` raise ImportError
  monkeypatch.delenv("TPU_LIBRARY_PATH", raising=False)
  with pytest.raises(plan.PlanError, match=r"needs libtpu.*pip install -e '\.\[tpu\]'"):
    plan.topology_devices("v5e:2x2")


@pytest.mark.parametrize("name, message", [
    ("v9:2x2", r"unknown TPU generation 'v9'; known: \['v2', 'v3', 'v4', 'v5e', 'v5p', 'v6e'\]"),
    ("v5litepod-16", r"--topology='v5litepod-16' is not GENERATION:AxB\[xC\]"),
    ("v5e:0x2", r"every dimension must be at least 1"),
])
def test_unknown_topology_names_the_flag(name, message):
  with pytest.raises(plan.PlanError, match=message):
    plan.topology_devices(name)


def test_num_slices_must_be_positive():
  with pytest.raises(plan.PlanError, match=r"--num_slices=0 must be at least 1"):
    plan.topology_devices("v5e:2x2", num_slices=0)


def test_variants_are_ordered_cheapest_first():
  config = plan.with_overrides(_tiny_config(), {"training.global_batch_size": 64})
  got = list(plan.variants(config, {"data": 4, "fsdp": 1, "tensor": 1}, num_slices=1))
  fsdp = {"partitioning.mesh.data": 1, "partitioning.mesh.fsdp": 4}
  assert got[:4] == [fsdp, {"training.microbatches": 2}, {**fsdp, "training.microbatches": 2},
                     {"training.microbatches": 4}]
  # Every microbatch count keeps 64 / k divisible by the 4 data-parallel devices.
  assert max(v.get("training.microbatches", 1) for v in got) == 16
  remats = [v["model.remat_policy"] for v in got if "model.remat_policy" in v]
  assert remats[0] == "dots_saveable" and remats[-1] == "nothing_saveable"
  first_remat = next(i for i, v in enumerate(got) if "model.remat_policy" in v)
  assert all("model.remat_policy" not in v for v in got[:first_remat])
  assert first_remat == 9  # fsdp, then (k, k + fsdp) for k = 2, 4, 8, 16


def _attempt(fits=True, step=None, **overrides):
  estimate = None if step is None else roofline.Roofline(
      flops=step * 100e12, bytes_accessed=1.0, analytic_flops=1.0, peak_flops=100e12,
      hbm_bandwidth=1e12)
  return plan.Attempt(overrides=overrides, mesh={}, fits=fits, estimate=estimate)


def test_the_fastest_fitting_variant_is_chosen_cheapest_first_on_ties():
  slow, fast = _attempt(step=2.0), _attempt(step=1.0)
  assert plan.choose([_attempt(fits=False, step=0.5), slow, fast]) is fast
  tie = _attempt(step=1.0 + plan.ROOFLINE_TIE / 2)  # cheaper and as fast: it wins
  assert plan.choose([slow, tie, fast]) is tie
  unknown = _attempt()  # no estimate (a loop that could not be counted): last resort
  assert plan.choose([unknown, slow]) is slow and plan.choose([unknown]) is unknown
  assert plan.choose([_attempt(fits=False)]) is None


def test_search_stops_at_fewer_microbatches_and_max_variants(monkeypatch):
  config = plan.with_overrides(_tiny_config(), {"training.global_batch_size": 64})
  first = plan.Attempt(overrides={}, mesh={"data": 4, "fsdp": 1, "tensor": 1})
  compiled = []

  def fake_compile(config, overrides, devices, spec, analytic_per_device=None):
    compiled.append(overrides)
    # Accumulation over 4 fits without remat, over 2 with dots_saveable.
    k = overrides.get("training.microbatches", 1)
    fits = k >= 4 or (k == 2 and overrides.get("model.remat_policy") == "dots_saveable")
    return plan.Attempt(overrides=overrides, mesh={}, fits=fits)

  monkeypatch.setattr(plan, "compile_attempt", fake_compile)
  tried = plan.search(config, first, [], None, num_slices=1, max_variants=12)
  assert tried[3].overrides == {"training.microbatches": 4} and tried[3].fits
  # After that only fewer microbatches (with more remat); after k=2 fits, only k=1.
  ks = [o.get("training.microbatches", 1) for o in compiled[4:]]
  assert ks == [1, 1, 2, 1, 1, 1, 1]
  assert compiled[6] == {"training.microbatches": 2, "model.remat_policy": "dots_saveable"}
  compiled.clear()
  assert len(plan.search(config, first, [], None, num_slices=1, max_variants=2)) == 2


def test_roofline_of_albert_base_on_v5e():
  # The reference: ALBERT-base, bf16, seq 512, batch 32 per v5e chip, LAMB, depth scan unrolled;
  # XLA's cost_analysis() gave 9.39e12 FLOPs and 9.68e10 bytes accessed per device.
  model = ModelConfig.from_any(_config("size=base").model)
  analytic = 32 * metrics.pretraining_flops_per_example(model, 512, 20)
  r = roofline.roofline(9.39e12, 9.68e10, analytic, tpu_specs.SPECS["v5e"])
  assert r.intensity == pytest.approx(97, abs=0.5) and r.ridge == pytest.approx(240.5, abs=0.1)
  assert r.bound == "HBM" and r.step_seconds == r.hbm_seconds == pytest.approx(9.68e10 / 819e9)
  assert r.compute_seconds == pytest.approx(9.39e12 / 197e12)
  assert r.mfu_ceiling == pytest.approx(0.40, abs=0.005)
  # Twice the bytes, half the ceiling; a compute-bound step's ceiling is analytic / XLA FLOPs.
  assert roofline.roofline(9.39e12, 2 * 9.68e10, analytic, tpu_specs.SPECS["v5e"]).mfu_ceiling \
      == pytest.approx(r.mfu_ceiling / 2)
  compute = roofline.roofline(9.39e12, 1e9, analytic, tpu_specs.SPECS["v5e"])
  assert compute.bound == "compute" and compute.mfu_ceiling == pytest.approx(analytic / 9.39e12)
  # XLA sees no FLOPs in a Pallas kernel: the analytic FLOPs floor the compute time, so a
  # compute-bound step's ceiling is at most 100%.
  hidden = roofline.roofline(0.5 * analytic, 1e9, analytic, tpu_specs.SPECS["v5e"])
  assert hidden.compute_seconds == pytest.approx(analytic / 197e12)
  assert hidden.mfu_ceiling == pytest.approx(1.0)
  # The intensity counts the same FLOPs: above the ridge exactly when compute-bound.
  assert hidden.intensity == pytest.approx(analytic / 1e9) and hidden.intensity > hidden.ridge
  with pytest.raises(ValueError, match="must be positive"):
    roofline.roofline(9.39e12, 0, analytic, tpu_specs.SPECS["v5e"])


def test_hbm_bandwidth_per_device():
  assert {g: s.hbm_bandwidth_per_chip / 1e9 for g, s in tpu_specs.SPECS.items()} == {
      "v2": 700, "v3": 900, "v4": 1200, "v5e": 819, "v5p": 2765, "v6e": 1640}
  v3 = tpu_specs.SPECS["v3"]  # one TensorCore: half the chip's bandwidth and peak
  assert v3.hbm_bandwidth_per_device == 450e9
  assert roofline.roofline(1.0, 1.0, 1.0, v3).ridge == pytest.approx(123e12 / 900e9)
  assert all(s.bandwidth_source.startswith("https://") for s in tpu_specs.SPECS.values())


def test_oom_message_is_parsed():
  message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
             "temporaries (29.00G) exceeds available HBM (15.48G).")
  match = plan._OOM.search(message)  # pylint: disable=protected-access
  assert plan._to_bytes(*match.group(1, 2)) == 29 * 2**30  # pylint: disable=protected-access
  assert plan._to_bytes(*match.group(3, 4)) == 15.48 * 2**30  # pylint: disable=protected-access


def test_specs_agree_with_the_mfu_table_of_training():
  class Device:
    def __init__(self, kind):
      self.device_kind = kind

  for spec in tpu_specs.SPECS.values():
    assert metrics.peak_flops_per_device(Device(spec.device_kind), "bfloat16") == pytest.approx(
        spec.peak_flops_per_device), spec.generation
  assert tpu_specs.SPECS["v3"].hbm_per_device == 16 * 2**30  # one core of a 32 GiB chip
  # A variant of a known name is not guessed (no MFU rather than a wrong one).
  for kind in ("NVIDIA H100 PCIe", "TPU v4 lite"):
    assert metrics.peak_flops_per_device(Device(kind), "bfloat16") is None


def test_topology_kwargs():
  v4, dims = tpu_specs.parse_topology("v4:4x4x8")
  assert tpu_specs.topology_kwargs(v4, dims) == {"chip_config_name": "megacore",
                                                 "wrap": (True, True, True)}
  v5e, dims = tpu_specs.parse_topology("v5e:8x16")
  assert tpu_specs.topology_kwargs(v5e, dims) == {"wrap": (False, True, False)}


def _config(arg: str):
  spec = importlib.util.spec_from_file_location("plan_test_config",
                                                os.path.join(REPO, "configs", "pretrain.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _tiny_config():
  return _config("size=tiny")


def test_every_remat_policy_has_a_rank():
  from albert_jax.model.config import REMAT_POLICIES  # pylint: disable=g-import-not-at-top
  assert set(plan.REMAT_RANK) == set(REMAT_POLICIES)
